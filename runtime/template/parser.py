"""The text/template parser (text/template/parse/parse.go, rewritten).

``parse_trees(name, text, funcs)`` returns every template the text defines (the
top level under ``name``, plus ``define`` and ``block`` bodies), or raises
:class:`TemplateError` with Go's message, e.g. ``template: :1: unexpected EOF``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NoReturn

from .errors import TemplateError
from .gostrconv import (
    StrconvError,
    go_quote,
    parse_float,
    parse_int0,
    parse_uint0,
    unquote,
    unquote_char,
)
from .lexer import Item, Lexer, T
from .nodes import (
    ActionNode,
    BoolNode,
    BreakNode,
    ChainNode,
    CommandNode,
    CommentNode,
    ContinueNode,
    DotNode,
    ElseNode,
    EndNode,
    FieldNode,
    IdentifierNode,
    IfNode,
    ListNode,
    NilNode,
    Node,
    NumberNode,
    PipeNode,
    RangeNode,
    StringNode,
    TemplateNode,
    TextNode,
    VariableNode,
    WithNode,
)

MAX_PIPELINE_CMDS = 1000
# Go allows 10000 nested parentheses; Python's stack is shallower, so stop at 100.
MAX_STACK_DEPTH = 100
# unicode.IsSpace, which bytes.TrimSpace uses.
GO_SPACE = " \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


class Tree:
    """One parsed template: its name and root list."""

    def __init__(self, name: str, parse_name: str, text: str) -> None:
        self.name = name
        self.parse_name = parse_name
        self.text = text
        self.root: ListNode | None = None


class _Parser:
    def __init__(self, tree: Tree, items: list[Item], shared: _Shared) -> None:
        self.tree = tree
        self.items = items
        self.shared = shared
        self.token: list[Item] = [items[0], items[0], items[0]]
        self.peek_count = 0
        self.vars: list[str] = ["$"]
        self.action_line = 0
        self.range_depth = 0
        self.stack_depth = 0

    # -- token plumbing (three-token lookahead, as in Go) -------------------

    def _lex_next(self) -> Item:
        sh = self.shared
        item = self.items[sh.index]
        if sh.index < len(self.items) - 1:
            sh.index += 1
        return item

    def next(self) -> Item:
        if self.peek_count > 0:
            self.peek_count -= 1
        else:
            self.token[0] = self._lex_next()
        return self.token[self.peek_count]

    def backup(self) -> None:
        self.peek_count += 1

    def backup2(self, t1: Item) -> None:
        self.token[1] = t1
        self.peek_count = 2

    def backup3(self, t2: Item, t1: Item) -> None:
        self.token[1] = t1
        self.token[2] = t2
        self.peek_count = 3

    def peek(self) -> Item:
        if self.peek_count > 0:
            return self.token[self.peek_count - 1]
        self.peek_count = 1
        self.token[0] = self._lex_next()
        return self.token[0]

    def next_non_space(self) -> Item:
        while True:
            token = self.next()
            if token.typ != T.SPACE:
                return token

    def peek_non_space(self) -> Item:
        token = self.next_non_space()
        self.backup()
        return token

    # -- errors --------------------------------------------------------------

    def errorf(self, msg: str) -> NoReturn:
        self.tree.root = None
        raise TemplateError(f"template: {self.tree.parse_name}:{self.token[0].line}: {msg}")

    def expect(self, expected: T, context: str) -> Item:
        token = self.next_non_space()
        if token.typ != expected:
            self.unexpected(token, context)
        return token

    def expect_one_of(self, e1: T, e2: T, context: str) -> Item:
        token = self.next_non_space()
        if token.typ != e1 and token.typ != e2:
            self.unexpected(token, context)
        return token

    def unexpected(self, token: Item, context: str) -> NoReturn:
        if token.typ == T.ERROR:
            extra = ""
            if self.action_line != 0 and self.action_line != token.line:
                extra = f" in action started at {self.tree.parse_name}:{self.action_line}"
                if token.val.endswith(" action"):
                    extra = extra[len(" in action") :]
            self.errorf(f"{token}{extra}")
        self.errorf(f"unexpected {token} in {context}")

    # -- grammar -------------------------------------------------------------

    def parse(self) -> None:
        self.tree.root = ListNode(self.peek().pos)
        while self.peek().typ != T.EOF:
            if self.peek().typ == T.LEFT_DELIM:
                delim = self.next()
                if self.next_non_space().typ == T.DEFINE:
                    sub = Tree("definition", self.tree.parse_name, self.tree.text)
                    p = _Parser(sub, self.items, self.shared)
                    p.parse_definition()
                    continue
                self.backup2(delim)
            n = self.text_or_action()
            if isinstance(n, (EndNode, ElseNode)):
                self.errorf(f"unexpected {n}")
            self.tree.root.nodes.append(n)

    def parse_definition(self) -> None:
        context = "define clause"
        name = self.expect_one_of(T.STRING, T.RAW_STRING, context)
        try:
            self.tree.name = unquote(name.val)
        except StrconvError as e:
            self.errorf(str(e))
        self.expect(T.RIGHT_DELIM, context)
        root, end = self.item_list()
        if not isinstance(end, EndNode):
            self.errorf(f"unexpected {end} in {context}")
        self.tree.root = root
        self.shared.add(self, self.tree)

    def item_list(self) -> tuple[ListNode, Node]:
        lst = ListNode(self.peek_non_space().pos)
        while self.peek_non_space().typ != T.EOF:
            n = self.text_or_action()
            if isinstance(n, (EndNode, ElseNode)):
                return lst, n
            lst.nodes.append(n)
        self.errorf("unexpected EOF")

    def text_or_action(self) -> Node:
        token = self.next_non_space()
        if token.typ == T.TEXT:
            return TextNode(token.pos, token.val)
        if token.typ == T.LEFT_DELIM:
            self.action_line = token.line
            try:
                return self.action()
            finally:
                self.action_line = 0
        if token.typ == T.COMMENT:
            return CommentNode(token.pos, token.val)
        self.unexpected(token, "input")

    def action(self) -> Node:
        token = self.next_non_space()
        typ = token.typ
        if typ == T.BLOCK:
            return self.block_control()
        if typ == T.BREAK:
            return self.break_control(token)
        if typ == T.CONTINUE:
            return self.continue_control(token)
        if typ == T.ELSE:
            return self.else_control()
        if typ == T.END:
            return EndNode(self.expect(T.RIGHT_DELIM, "end").pos)
        if typ == T.IF:
            return IfNode(*self.parse_control("if"))
        if typ == T.RANGE:
            return RangeNode(*self.parse_control("range"))
        if typ == T.TEMPLATE:
            return self.template_control()
        if typ == T.WITH:
            return WithNode(*self.parse_control("with"))
        self.backup()
        token = self.peek()
        return ActionNode(token.pos, token.line, self.pipeline("command", T.RIGHT_DELIM))

    def break_control(self, start: Item) -> Node:
        token = self.next_non_space()
        if token.typ != T.RIGHT_DELIM:
            self.unexpected(token, "{{break}}")
        if self.range_depth == 0:
            self.errorf("{{break}} outside {{range}}")
        return BreakNode(start.pos, start.line)

    def continue_control(self, start: Item) -> Node:
        token = self.next_non_space()
        if token.typ != T.RIGHT_DELIM:
            self.unexpected(token, "{{continue}}")
        if self.range_depth == 0:
            self.errorf("{{continue}} outside {{range}}")
        return ContinueNode(start.pos, start.line)

    def pipeline(self, context: str, end: T) -> PipeNode:  # noqa: C901 - mirrors Go
        token = self.peek_non_space()
        pipe = PipeNode(token.pos, token.line)
        while True:  # "decls:" label
            v = self.peek_non_space()
            if v.typ != T.VARIABLE:
                break
            self.next()
            token_after = self.peek()
            nxt = self.peek_non_space()
            if nxt.typ in (T.ASSIGN, T.DECLARE):
                pipe.is_assign = nxt.typ == T.ASSIGN
                self.next_non_space()
                pipe.decl.append(VariableNode(v.pos, v.val.split(".")))
                self.vars.append(v.val)
                break
            if nxt.typ == T.CHAR and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(VariableNode(v.pos, v.val.split(".")))
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().typ in (T.VARIABLE, T.RIGHT_DELIM, T.RIGHT_PAREN):
                        continue
                    self.errorf("range can only initialize variables")
                self.errorf(f"too many declarations in {context}")
            if token_after.typ == T.SPACE:
                self.backup3(v, token_after)
            else:
                self.backup2(v)
            break
        while True:
            token = self.next_non_space()
            if token.typ == end:
                self.check_pipeline(pipe, context)
                return pipe
            if token.typ in (
                T.BOOL, T.CHAR_CONSTANT, T.COMPLEX, T.DOT, T.FIELD, T.IDENTIFIER,
                T.NUMBER, T.NIL, T.RAW_STRING, T.STRING, T.VARIABLE, T.LEFT_PAREN,
            ):
                self.backup()
                pipe.cmds.append(self.command())
                if len(pipe.cmds) > MAX_PIPELINE_CMDS:
                    self.errorf("pipeline too long")
            else:
                self.unexpected(token, context)

    def check_pipeline(self, pipe: PipeNode, context: str) -> None:
        if not pipe.cmds:
            self.errorf(f"missing value for {context}")
        for i, c in enumerate(pipe.cmds[1:]):
            if isinstance(c.args[0], (BoolNode, DotNode, NilNode, NumberNode, StringNode)):
                self.errorf(f"non executable command in pipeline stage {i + 2}")

    def parse_control(self, context: str) -> tuple[int, int, PipeNode, ListNode, ListNode | None]:
        mark = len(self.vars)
        try:
            pipe = self.pipeline(context, T.RIGHT_DELIM)
            if context == "range":
                self.range_depth += 1
            lst, nxt = self.item_list()
            if context == "range":
                self.range_depth -= 1
            else_list: ListNode | None = None
            if isinstance(nxt, ElseNode):
                if context == "if" and self.peek().typ == T.IF:
                    self.next()
                    else_list = ListNode(nxt.pos, [IfNode(*self.parse_control("if"))])
                elif context == "with" and self.peek().typ == T.WITH:
                    self.next()
                    else_list = ListNode(nxt.pos, [WithNode(*self.parse_control("with"))])
                else:
                    else_list, nxt = self.item_list()
                    if not isinstance(nxt, EndNode):
                        self.errorf(f"expected end; found {nxt}")
            return pipe.pos, pipe.line, pipe, lst, else_list
        finally:
            del self.vars[mark:]

    def else_control(self) -> Node:
        peek = self.peek_non_space()
        if peek.typ in (T.IF, T.WITH):
            return ElseNode(peek.pos, peek.line)
        token = self.expect(T.RIGHT_DELIM, "else")
        return ElseNode(token.pos, token.line)

    def block_control(self) -> Node:
        context = "block clause"
        token = self.next_non_space()
        name = self.parse_template_name(token, context)
        pipe = self.pipeline(context, T.RIGHT_DELIM)
        block = Tree(name, self.tree.parse_name, self.tree.text)
        p = _Parser(block, self.items, self.shared)
        root, end = p.item_list()
        if not isinstance(end, EndNode):
            self.errorf(f"unexpected {end} in {context}")
        block.root = root
        self.shared.add(p, block)
        return TemplateNode(token.pos, token.line, name, pipe)

    def template_control(self) -> Node:
        context = "template clause"
        token = self.next_non_space()
        name = self.parse_template_name(token, context)
        pipe = None
        if self.next_non_space().typ != T.RIGHT_DELIM:
            self.backup()
            pipe = self.pipeline(context, T.RIGHT_DELIM)
        return TemplateNode(token.pos, token.line, name, pipe)

    def parse_template_name(self, token: Item, context: str) -> str:
        if token.typ in (T.STRING, T.RAW_STRING):
            try:
                return unquote(token.val)
            except StrconvError as e:
                self.errorf(str(e))
        self.unexpected(token, context)

    def command(self) -> CommandNode:
        cmd = CommandNode(self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            token = self.next()
            if token.typ == T.SPACE:
                continue
            if token.typ in (T.RIGHT_DELIM, T.RIGHT_PAREN):
                self.backup()
            elif token.typ != T.PIPE:
                self.unexpected(token, "operand")
            break
        if not cmd.args:
            self.errorf("empty command")
        return cmd

    def operand(self) -> Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().typ == T.FIELD:
            chain = ChainNode(self.peek().pos, node)
            while self.peek().typ == T.FIELD:
                chain.fields.append(self.next().val[1:])
            if isinstance(node, FieldNode):
                return FieldNode(chain.pos, node.ident + chain.fields)
            if isinstance(node, VariableNode):
                return VariableNode(chain.pos, node.ident + chain.fields)
            if isinstance(node, (BoolNode, StringNode, NumberNode, NilNode, DotNode)):
                self.errorf(f"unexpected . after term {go_quote(str(node))}")
            return chain
        return node

    def term(self) -> Node | None:
        token = self.next_non_space()
        typ = token.typ
        if typ == T.IDENTIFIER:
            funcs = self.shared.funcs
            if funcs is not None and token.val not in funcs:
                self.errorf(f"function {go_quote(token.val)} not defined")
            return IdentifierNode(token.pos, token.val)
        if typ == T.DOT:
            return DotNode(token.pos)
        if typ == T.NIL:
            return NilNode(token.pos)
        if typ == T.VARIABLE:
            return self.use_var(token)
        if typ == T.FIELD:
            return FieldNode(token.pos, token.val[1:].split("."))
        if typ == T.BOOL:
            return BoolNode(token.pos, token.val == "true")
        if typ in (T.CHAR_CONSTANT, T.COMPLEX, T.NUMBER):
            try:
                return new_number(token.pos, token.val, typ)
            except StrconvError as e:
                self.errorf(str(e))
        if typ == T.LEFT_PAREN:
            if self.stack_depth >= MAX_STACK_DEPTH:
                self.errorf("max expression depth exceeded")
            self.stack_depth += 1
            try:
                return self.pipeline("parenthesized pipeline", T.RIGHT_PAREN)
            finally:
                self.stack_depth -= 1
        if typ in (T.STRING, T.RAW_STRING):
            try:
                return StringNode(token.pos, token.val, unquote(token.val))
            except StrconvError as e:
                self.errorf(str(e))
        self.backup()
        return None

    def use_var(self, token: Item) -> Node:
        ident = token.val.split(".")
        if ident[0] not in self.vars:
            self.errorf(f"undefined variable {go_quote(ident[0])}")
        return VariableNode(token.pos, ident)


class _Shared:
    """State shared by the parsers of one text: the item stream and the tree set."""

    def __init__(self, funcs: Collection[str] | None) -> None:
        self.index = 0
        self.funcs = funcs
        self.trees: dict[str, Tree] = {}

    def add(self, parser: _Parser, tree: Tree) -> None:
        old = self.trees.get(tree.name)
        if old is None or is_empty_tree(old.root):
            self.trees[tree.name] = tree
            return
        if not is_empty_tree(tree.root):
            parser.errorf(f"template: multiple definition of template {go_quote(tree.name)}")


def is_empty_tree(n: Node | None) -> bool:
    if n is None:
        return True
    if isinstance(n, ListNode):
        return all(is_empty_tree(c) for c in n.nodes)
    if isinstance(n, TextNode):
        return n.value.strip(GO_SPACE) == ""
    if isinstance(n, CommentNode):
        return True
    return False


def new_number(pos: int, text: str, typ: T) -> NumberNode:
    """parse.Tree.newNumber: a number literal with every type it fits."""
    n = NumberNode(pos, text)
    if typ == T.CHAR_CONSTANT:
        ch, tail = unquote_char(text[1:], text[0])
        if tail != "'":
            raise StrconvError(f"malformed character constant: {text}")
        r = ord(ch) if not 0xDC80 <= ord(ch) <= 0xDCFF else ord(ch) - 0xDC00
        n.int64 = n.uint64 = r
        n.is_int = n.is_uint = n.is_float = True
        n.float64 = float(r)
        return n
    if typ == T.COMPLEX:
        n.is_complex = True
        n.complex128 = _scan_complex(text)
        _simplify_complex(n)
        return n
    if text.endswith("i"):
        try:
            f = parse_float(text[:-1])
        except StrconvError:
            pass
        else:
            n.is_complex = True
            n.complex128 = complex(0, f)
            _simplify_complex(n)
            return n
    try:
        n.uint64 = parse_uint0(text)
        n.is_uint = True
    except StrconvError:
        pass
    try:
        n.int64 = parse_int0(text)
        n.is_int = True
        if n.int64 == 0:
            n.is_uint = True
            n.uint64 = 0
    except StrconvError:
        pass
    if n.is_int:
        n.is_float = True
        n.float64 = float(n.int64)
    elif n.is_uint:
        n.is_float = True
        n.float64 = float(n.uint64)
    else:
        try:
            f = parse_float(text)
        except StrconvError:
            pass
        else:
            if not any(c in text for c in ".eEpP"):
                raise StrconvError(f"integer overflow: {go_quote(text)}")
            n.is_float = True
            n.float64 = f
            if f == int(f) and -(1 << 63) <= int(f) < (1 << 63):
                n.is_int = True
                n.int64 = int(f)
            if f == int(f) and 0 <= int(f) < (1 << 64):
                n.is_uint = True
                n.uint64 = int(f)
    if not (n.is_int or n.is_uint or n.is_float):
        raise StrconvError(f"illegal number syntax: {go_quote(text)}")
    return n


def _scan_complex(text: str) -> complex:
    """fmt.Sscan of a complex literal such as ``1+2i`` (errors worded as Go's)."""
    pos = 0

    def accept(chars: str) -> str:
        nonlocal pos
        if pos < len(text) and text[pos] in chars:
            pos += 1
            return text[pos - 1]
        return ""

    def float_token() -> str:
        start = pos
        accept("+-")
        digits, exp = "0123456789_", "eEpP"
        if accept("0") and accept("xX"):
            digits, exp = "0123456789aAbBcCdDeEfF_", "pP"
        while accept(digits):
            pass
        if accept("."):
            while accept(digits):
                pass
        if accept(exp):
            accept("+-")
            while accept("0123456789_"):
                pass
        return text[start:pos]

    def convert(tok: str) -> float:
        try:
            return parse_float(tok)
        except StrconvError as e:
            raise StrconvError(f"strconv.ParseFloat: parsing {go_quote(tok)}: {e}") from None

    real = float_token()
    sign = accept("+-")
    if not sign:
        raise StrconvError("syntax error scanning complex number")
    imag = sign + float_token()
    if not accept("i"):
        raise StrconvError("syntax error scanning complex number")
    return complex(convert(real), convert(imag))


def _simplify_complex(n: NumberNode) -> None:
    n.is_float = n.complex128.imag == 0
    if n.is_float:
        f = n.complex128.real
        n.float64 = f
        n.is_int = f == int(f) and -(1 << 63) <= int(f) < (1 << 63)
        if n.is_int:
            n.int64 = int(f)
        n.is_uint = f == int(f) and 0 <= int(f) < (1 << 64)
        if n.is_uint:
            n.uint64 = int(f)


def parse_trees(name: str, text: str, funcs: Collection[str] | None) -> dict[str, Tree]:
    """Parse ``text``; ``funcs`` lists the function names (None: no check)."""
    lexer = Lexer(text, break_ok="break" not in (funcs or ()), continue_ok="continue" not in (funcs or ()))
    items = lexer.run()
    shared = _Shared(funcs)
    top = Tree(name, name, text)
    p = _Parser(top, items, shared)
    p.parse()
    shared.add(p, top)
    return shared.trees


__all__ = ["Tree", "is_empty_tree", "new_number", "parse_trees"]
