"""Executing a parsed template (text/template/exec.go, rewritten).

The state machine follows Go's: values flow as Python objects (see
:mod:`values`), ``INVALID`` stands for Go's zero ``reflect.Value`` and ``Iface``
marks a value read through ``interface{}``. Errors carry Go's wording and
location, e.g. ``template: :1:3: executing "" at <.X.Y>: ...``.

Limits keep hostile templates in check: output size, number of steps (actions
and loop iterations) and ``template`` nesting depth. Exceeding one raises
:class:`LimitExceeded`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

from .errors import LimitExceeded, TemplateError
from .funcs import FuncError, FuncSpec, indirect, indirect_interface, is_true, truth
from .gofmt import sort_keys, sprint_value, sprintf
from .gostrconv import go_quote
from .nodes import (
    ActionNode,
    BoolNode,
    BreakNode,
    ChainNode,
    CommandNode,
    CommentNode,
    ContinueNode,
    DotNode,
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
from .parser import Tree
from .values import (
    INVALID,
    GoMap,
    GoStruct,
    GoValue,
    Iface,
    Uint8,
    map_key_type,
    type_name,
    wrap_elem,
)

MISSING: Any = object()  # Go's missingVal: "no final argument"


@dataclass
class Limits:
    """Bounds on one execution."""

    max_output: int = 16 * 1024 * 1024  # characters
    max_steps: int = 2_000_000  # actions, text nodes and loop iterations
    max_depth: int = 64  # nested {{template}} calls


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def _static_type(v: Any) -> str:
    if isinstance(v, Iface) or v is None:
        return "interface {}"
    return type_name(v)


def _deref_struct(v: Any) -> Any:
    if isinstance(v, GoStruct) and v.pointer:
        return GoStruct(v.type_name, v.fields, iface_fields=v.iface_fields,
                        json_fields=v.json_fields, stringer=v.stringer, marshal=v.marshal)
    return v


class State:
    """One execution: output buffer, variable stack, position for errors."""

    def __init__(
        self,
        trees: dict[str, Tree],
        tree: Tree,
        funcs: dict[str, FuncSpec],
        missingkey: str,
        limits: Limits,
    ) -> None:
        self.trees = trees
        self.tree = tree
        self.name = tree.name
        self.funcs = funcs
        self.missingkey = missingkey
        self.limits = limits
        self.out: list[str] = []
        self.out_len = 0
        self.steps = 0
        self.vars: list[list[Any]] = []
        self.depth = 0
        self.node: Node | None = None

    # -- errors --------------------------------------------------------------

    def errorf(self, msg: str) -> NoReturn:
        raise TemplateError(self.error_message(msg))

    def error_message(self, msg: str) -> str:
        node = self.node
        if node is None:
            return f"template: {self.name}: {msg}"
        text = self.tree.text
        pos = min(node.pos, len(text))
        before = text[:pos]
        nl = before.rfind("\n")
        col = len(before[nl + 1 :].encode("utf-8", "surrogatepass"))
        line = 1 + before.count("\n")
        loc = f"{self.tree.parse_name}:{line}:{col}"
        return f"template: {loc}: executing {go_quote(self.name)} at <{node}>: {msg}"

    def at(self, node: Node) -> None:
        self.node = node

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise LimitExceeded(self.error_message(
                f"exceeded maximum number of steps ({self.limits.max_steps})"))

    def write(self, s: str) -> None:
        self.out_len += len(s)
        if self.out_len > self.limits.max_output:
            raise LimitExceeded(self.error_message(
                f"exceeded maximum output size ({self.limits.max_output} characters)"))
        self.out.append(s)

    # -- variables -----------------------------------------------------------

    def push(self, name: str, value: Any) -> None:
        self.vars.append([name, value])

    def mark(self) -> int:
        return len(self.vars)

    def pop(self, mark: int) -> None:
        del self.vars[mark:]

    def set_var(self, name: str, value: Any) -> None:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i][1] = value
                return
        self.errorf(f"undefined variable: {name}")

    def set_top_var(self, n: int, value: Any) -> None:
        self.vars[len(self.vars) - n][1] = value

    def var_value(self, name: str) -> Any:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                return self.vars[i][1]
        self.errorf(f"undefined variable: {name}")

    # -- walking -------------------------------------------------------------

    def walk(self, dot: Any, node: Node) -> None:  # noqa: C901 - a type switch
        self.at(node)
        if isinstance(node, TextNode):
            self.step()
            self.write(node.value)
        elif isinstance(node, ActionNode):
            self.step()
            val = self.eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.print_value(node, val)
        elif isinstance(node, ListNode):
            for n in node.nodes:
                self.walk(dot, n)
        elif isinstance(node, IfNode):
            self.walk_if_or_with(False, dot, node.pipe, node.list, node.else_list)
        elif isinstance(node, WithNode):
            self.walk_if_or_with(True, dot, node.pipe, node.list, node.else_list)
        elif isinstance(node, RangeNode):
            self.walk_range(dot, node)
        elif isinstance(node, TemplateNode):
            self.walk_template(dot, node)
        elif isinstance(node, BreakNode):
            raise _Break
        elif isinstance(node, ContinueNode):
            raise _Continue
        elif isinstance(node, CommentNode):
            pass
        else:
            self.errorf(f"unknown node: {node}")

    def walk_if_or_with(
        self, is_with: bool, dot: Any, pipe: PipeNode, lst: ListNode, else_list: ListNode | None
    ) -> None:
        mark = self.mark()
        try:
            val = self.eval_pipeline(dot, pipe)
            t, ok = is_true(indirect_interface(val))
            if not ok:
                self.errorf(f"if/with can't use {sprintf('%v', [val])}")
            if t:
                self.walk(val if is_with else dot, lst)
            elif else_list is not None:
                self.walk(dot, else_list)
        finally:
            self.pop(mark)

    def walk_range(self, dot: Any, r: RangeNode) -> None:  # noqa: C901 - mirrors Go
        self.at(r)
        outer = self.mark()
        try:
            val, _ = indirect(self.eval_pipeline(dot, r.pipe))
            mark = self.mark()
            decl = r.pipe.decl

            def one(index: Any, elem: Any) -> None:
                self.step()
                if decl:
                    if r.pipe.is_assign:
                        self.set_var(decl[0].ident[0], index if len(decl) > 1 else elem)
                    else:
                        self.set_top_var(1, elem)
                if len(decl) > 1:
                    if r.pipe.is_assign:
                        self.set_var(decl[1].ident[0], elem)
                    else:
                        self.set_top_var(2, index)
                try:
                    self.walk(elem, r.list)
                except _Continue:
                    pass
                finally:
                    self.pop(mark)

            try:
                if isinstance(val, (list, tuple, bytes, bytearray)):
                    if len(val) > 0:
                        for i, e in enumerate(val):
                            if isinstance(val, (bytes, bytearray)):
                                one(i, Uint8(e))
                            else:
                                one(i, wrap_elem(val, e))
                        return
                elif isinstance(val, dict):
                    if len(val) > 0:
                        for k in sort_keys(val):
                            one(k, wrap_elem(val, val[k]))
                        return
                elif isinstance(val, int) and not isinstance(val, bool):
                    if len(decl) > 1:
                        self.errorf(f"can't use {sprintf('%v', [val])} to iterate over more than one variable")
                    if val > 0:
                        for i in range(val):
                            one(INVALID, Uint8(i) if isinstance(val, Uint8) else i)
                        return
                elif val is INVALID or val is None:
                    pass
                else:
                    self.errorf(f"range can't iterate over {sprintf('%v', [val])}")
            except _Break:
                return
            if r.else_list is not None:
                self.walk(dot, r.else_list)
        finally:
            self.pop(outer)

    def walk_template(self, dot: Any, t: TemplateNode) -> None:
        self.at(t)
        tree = self.trees.get(t.name)
        if tree is None or tree.root is None:
            self.errorf(f"template {go_quote(t.name)} not defined")
        root = tree.root
        if self.depth >= self.limits.max_depth:
            raise LimitExceeded(self.error_message(
                f"exceeded maximum template depth ({self.limits.max_depth})"))
        dot = self.eval_pipeline(dot, t.pipe)
        saved = (self.vars, self.name, self.depth)
        self.vars = [["$", dot]]
        self.name = t.name
        self.depth += 1
        try:
            self.walk(dot, root)
        finally:
            self.vars, self.name, self.depth = saved

    # -- evaluation ----------------------------------------------------------

    def eval_pipeline(self, dot: Any, pipe: PipeNode | None) -> Any:
        if pipe is None:
            return INVALID
        self.at(pipe)
        value = MISSING
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)
            if isinstance(value, Iface):
                value = INVALID if value.v is None else value.v
        for v in pipe.decl:
            if pipe.is_assign:
                self.set_var(v.ident[0], value)
            else:
                self.push(v.ident[0], value)
        return value

    def not_a_function(self, args: list[Node], final: Any) -> None:
        if len(args) > 1 or final is not MISSING:
            self.errorf(f"can't give argument to non-function {args[0]}")

    def eval_command(self, dot: Any, cmd: CommandNode, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, FieldNode):
            return self.eval_field_node(dot, first, cmd.args, final)
        if isinstance(first, ChainNode):
            return self.eval_chain_node(dot, first, cmd.args, final)
        if isinstance(first, IdentifierNode):
            return self.eval_function(dot, first, cmd, cmd.args, final)
        if isinstance(first, PipeNode):
            self.not_a_function(cmd.args, final)
            return self.eval_pipeline(dot, first)
        if isinstance(first, VariableNode):
            return self.eval_variable_node(dot, first, cmd.args, final)
        self.at(first)
        self.not_a_function(cmd.args, final)
        if isinstance(first, BoolNode):
            return first.true
        if isinstance(first, DotNode):
            return dot
        if isinstance(first, NilNode):
            self.errorf("nil is not a command")
        if isinstance(first, NumberNode):
            return self.ideal_constant(first)
        if isinstance(first, StringNode):
            return first.value
        self.errorf(f"can't evaluate command {go_quote(str(first))}")

    def ideal_constant(self, c: NumberNode) -> Any:
        self.at(c)
        text = c.literal
        if c.is_complex:
            return c.complex128
        is_hex_int = len(text) > 2 and text[0] == "0" and text[1] in "xX" and not any(ch in text for ch in "pP")
        if c.is_float and not is_hex_int and not text.startswith("'") and any(ch in text for ch in ".eEpP"):
            return c.float64
        if c.is_int:
            return c.int64
        if c.is_uint:
            self.errorf(f"{text} overflows int")
        return INVALID

    def eval_field_node(self, dot: Any, field: FieldNode, args: list[Node] | None, final: Any) -> Any:
        self.at(field)
        return self.eval_field_chain(dot, dot, field, field.ident, args, final)

    def eval_chain_node(self, dot: Any, chain: ChainNode, args: list[Node] | None, final: Any) -> Any:
        self.at(chain)
        if not chain.fields:
            self.errorf("internal error: no fields in evalChainNode")
        if isinstance(chain.node, NilNode):
            self.errorf(f"indirection through explicit nil in {chain}")
        pipe = self.eval_arg(dot, None, chain.node)
        return self.eval_field_chain(dot, pipe, chain, chain.fields, args, final)

    def eval_variable_node(self, dot: Any, var: VariableNode, args: list[Node] | None, final: Any) -> Any:
        self.at(var)
        value = self.var_value(var.ident[0])
        if len(var.ident) == 1:
            self.not_a_function(args or [var], final)
            return value
        return self.eval_field_chain(dot, value, var, var.ident[1:], args, final)

    def eval_field_chain(
        self, dot: Any, receiver: Any, node: Node, ident: list[str], args: list[Node] | None, final: Any
    ) -> Any:
        for name in ident[:-1]:
            receiver = self.eval_field(dot, name, node, None, MISSING, receiver)
        return self.eval_field(dot, ident[-1], node, args, final, receiver)

    def eval_function(
        self, dot: Any, node: IdentifierNode, cmd: Node, args: list[Node] | None, final: Any
    ) -> Any:
        self.at(node)
        spec = self.funcs.get(node.ident)
        if spec is None:
            self.errorf(f"{go_quote(node.ident)} is not a defined function")
        return self.eval_call(dot, spec, cmd, node.ident, args, final)

    def eval_field(  # noqa: C901 - mirrors Go
        self, dot: Any, name: str, node: Node, args: list[Node] | None, final: Any, receiver: Any
    ) -> Any:
        if receiver is INVALID:
            if self.missingkey == "error":
                self.errorf(f"nil data; no entry for key {go_quote(name)}")
            return INVALID
        typ = _static_type(receiver)
        receiver, is_nil = indirect(receiver)
        if is_nil:
            self.errorf(f"nil pointer evaluating {typ}.{name}")
        has_args = (args is not None and len(args) > 1) or final is not MISSING
        if isinstance(receiver, GoStruct):
            if name in receiver.fields:
                if has_args:
                    self.errorf(f"{name} has arguments but cannot be invoked as function")
                val = receiver.fields[name]
                return Iface(val) if name in receiver.iface_fields else val
        elif isinstance(receiver, dict) and map_key_type(receiver) == "string":
            if has_args:
                self.errorf(f"{name} is not a method but has arguments")
            if name in receiver:
                return wrap_elem(receiver, receiver[name])
            if self.missingkey == "zero":
                if isinstance(receiver, GoMap) and receiver.zero is not None:
                    return receiver.zero()
                return Iface(None) if not isinstance(receiver, GoMap) or receiver.elem_iface else INVALID
            if self.missingkey == "error":
                self.errorf(f"map has no entry for key {go_quote(name)}")
            return INVALID
        self.errorf(f"can't evaluate field {name} in type {typ}")

    def eval_call(  # noqa: C901 - mirrors Go
        self, dot: Any, spec: FuncSpec, node: Node, name: str, args: list[Node] | None, final: Any
    ) -> Any:
        argn = args[1:] if args is not None else []
        num_in = len(argn) + (0 if final is MISSING else 1)
        params = spec.params
        num_fixed = len(argn)
        if spec.variadic:
            num_fixed = len(params) - 1
            if num_in < num_fixed:
                self.errorf(f"wrong number of args for {name}: want at least {num_fixed} got {len(argn)}")
        elif num_in != len(params):
            self.errorf(f"wrong number of args for {name}: want {len(params)} got {num_in}")
        if spec.builtin and name in ("and", "or"):
            v: Any = INVALID
            for a in argn:
                v = self.eval_arg(dot, "value", a)
                if truth(v) == (name == "or"):
                    return v
            if final is not MISSING:
                v = self.validate_type(final, "value")
            return v
        argv: list[Any] = []
        i = 0
        while i < num_fixed and i < len(argn):
            argv.append(self.eval_arg(dot, params[i], argn[i]))
            i += 1
        if spec.variadic:
            while i < len(argn):
                argv.append(self.eval_arg(dot, params[-1], argn[i]))
                i += 1
        if final is not MISSING:
            t = params[-1]
            if spec.variadic and num_in - 1 < num_fixed:
                t = params[num_in - 1]
            argv.append(self.validate_type(final, t))
        if spec.builtin and name == "call":
            argv.insert(0, str(argn[0]) if argn else sprint_value(final))
        try:
            return spec.impl(*argv)
        except FuncError as e:
            self.at(node)
            self.errorf(f"error calling {name}: {e}")

    def validate_type(self, value: Any, typ: str | None) -> Any:
        if typ is None or typ == "value":
            return value
        if typ == "any":
            if value is INVALID:
                return None
            if isinstance(value, Iface):
                return value.v
            return value
        # a concrete Go type
        if value is INVALID:
            self.errorf(f"invalid value; expected {typ}")
        inner = value.v if isinstance(value, Iface) else value
        if inner is None:
            self.errorf(f"wrong type for value; expected {typ}; got interface {{}}")
        if type_name(inner) == typ:
            return inner
        self.errorf(f"wrong type for value; expected {typ}; got {type_name(inner)}")

    def eval_arg(self, dot: Any, typ: str | None, n: Node) -> Any:  # noqa: C901 - a type switch
        self.at(n)
        if isinstance(n, DotNode):
            return self.validate_type(dot, typ)
        if isinstance(n, NilNode):
            if typ in ("value", "any"):
                return INVALID if typ == "value" else None
            self.errorf(f"cannot assign nil to {typ}")
        if isinstance(n, FieldNode):
            return self.validate_type(self.eval_field_node(dot, n, [n], MISSING), typ)
        if isinstance(n, VariableNode):
            return self.validate_type(self.eval_variable_node(dot, n, None, MISSING), typ)
        if isinstance(n, PipeNode):
            return self.validate_type(self.eval_pipeline(dot, n), typ)
        if isinstance(n, IdentifierNode):
            return self.validate_type(self.eval_function(dot, n, n, None, MISSING), typ)
        if isinstance(n, ChainNode):
            return self.validate_type(self.eval_chain_node(dot, n, None, MISSING), typ)
        if typ == "bool":
            if isinstance(n, BoolNode):
                return n.true
            self.errorf(f"expected bool; found {n}")
        if typ == "string":
            if isinstance(n, StringNode):
                return n.value
            self.errorf(f"expected string; found {n}")
        if typ == "int":
            if isinstance(n, NumberNode) and n.is_int:
                return n.int64
            self.errorf(f"expected integer; found {n}")
        if typ in ("any", "value", None):
            return self.eval_empty_interface(dot, n)
        self.errorf(f"can't handle {n} for arg of type {typ}")

    def eval_empty_interface(self, dot: Any, n: Node) -> Any:
        self.at(n)
        if isinstance(n, BoolNode):
            return n.true
        if isinstance(n, NumberNode):
            return self.ideal_constant(n)
        if isinstance(n, StringNode):
            return n.value
        self.errorf(f"can't handle assignment of {n} to empty interface argument")

    def print_value(self, node: Node, v: Any) -> None:
        self.at(node)
        if v is INVALID:
            self.write("<no value>")
            return
        if callable(v) and not isinstance(v, (GoValue, type)):
            self.errorf(f"can't print {node} of type {type_name(v)}")
        if isinstance(v, GoStruct) and v.pointer and v.stringer is None:
            v = _deref_struct(v)
        self.write(sprint_value(v))


def execute_tree(
    trees: dict[str, Tree],
    name: str,
    data: Any,
    funcs: dict[str, FuncSpec],
    missingkey: str,
    limits: Limits,
) -> str:
    """Run template ``name`` of ``trees`` on ``data``."""
    tree = trees.get(name)
    state = State(trees, tree if tree is not None else Tree(name, name, ""), funcs, missingkey, limits)
    if tree is None or tree.root is None:
        state.errorf(f"{go_quote(name)} is an incomplete or empty template")
    root = tree.root
    if data is None:
        data = INVALID  # reflect.ValueOf(nil): no value at all
    state.vars = [["$", data]]
    try:
        state.walk(data, root)
    except RecursionError:
        raise LimitExceeded(state.error_message("template nesting too deep")) from None
    except (_Break, _Continue):  # pragma: no cover - the parser prevents this
        pass
    return "".join(state.out)


__all__ = ["Limits", "State", "execute_tree", "MISSING"]
