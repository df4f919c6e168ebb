"""The Template object: parse once, execute many times."""

from __future__ import annotations

import copy
from typing import Any

from .errors import TemplateError
from .exec import Limits, execute_tree
from .funcs import ALL_FUNCS, BUILTINS, FuncSpec
from .nodes import (
    ActionNode,
    BranchNode,
    CommandNode,
    FieldNode,
    ListNode,
    Node,
    PipeNode,
    RangeNode,
    TemplateNode,
    TextNode,
    VariableNode,
)
from .parser import GO_SPACE, Tree, parse_trees


class Template:
    """A parsed template and the templates it defines.

    ``execute(data)`` runs it with Go's semantics (``missingkey=zero`` by default,
    as ollama sets). ``vars()`` lists the identifiers it references, lower-cased,
    as ollama's ``Template.Vars`` does.
    """

    def __init__(
        self,
        name: str,
        text: str,
        trees: dict[str, Tree],
        *,
        funcs: dict[str, FuncSpec],
        missingkey: str = "zero",
        limits: Limits | None = None,
    ) -> None:
        self.name = name
        self.text = text
        self.trees = trees
        self.funcs = funcs
        self.missingkey = missingkey
        self.limits = limits or Limits()
        self._cut: Template | None = None
        self._vars: frozenset[str] | None = None

    @property
    def tree(self) -> Tree:
        return self.trees[self.name]

    def execute(self, data: Any = None) -> str:
        """Execute the template on ``data``; raises TemplateError."""
        return execute_tree(self.trees, self.name, data, self.funcs, self.missingkey, self.limits)

    def identifiers(self) -> list[str]:
        """Field and variable identifiers in every template, in order (ollama's
        ``Identifiers``). Raises TemplateError where ollama's Vars fails."""
        names: list[str] = []
        for tree in self.trees.values():
            if tree.root is not None:
                for n in tree.root.nodes:
                    names.extend(identifiers(n))
        return names

    def vars(self) -> set[str]:
        """The lower-cased identifiers the template references (ollama's Vars)."""
        if self._vars is None:
            self._vars = frozenset(n.lower() for n in self.identifiers())
        return set(self._vars)

    def references(self, name: str) -> bool:
        """Whether ``name`` (case-insensitive) is referenced: ``tools``, ``suffix``..."""
        return name.lower() in self.vars()

    def clone(self) -> Template:
        return Template(self.name, self.text, copy.deepcopy(self.trees), funcs=self.funcs,
                        missingkey=self.missingkey, limits=self.limits)

    def with_response(self) -> Template:
        """ollama's touch-up: append ``{{ .Response }}`` when the template references
        neither Messages nor Response. Returns self when nothing is needed."""
        v = self.vars()
        if "messages" in v or "response" in v:
            return self
        t = self.clone()
        root = t.tree.root
        assert root is not None
        pipe = PipeNode(0, 0, cmds=[CommandNode(0, [FieldNode(0, ["Response"])])])
        root.nodes.append(ActionNode(0, 0, pipe))
        return t

    def cut_after_response(self) -> Template:
        """The template ollama runs for the last legacy turn: a copy of the top
        level cut right after the first ``.Response`` field, executed without
        ollama's functions, other templates or ``missingkey=zero``."""
        if self._cut is None:
            self._cut = self._make_cut()
        return self._cut

    def _make_cut(self) -> Template:
        root = copy.deepcopy(self.tree.root)
        assert root is not None
        cutter = _Cutter()
        cut = cutter.walk(root)
        tree = Tree(self.name, self.tree.parse_name, self.tree.text)
        tree.root = cut if isinstance(cut, ListNode) else ListNode(0, [])
        return Template(self.name, self.text, {self.name: tree}, funcs=BUILTINS,
                        missingkey="default", limits=self.limits)


def identifiers(n: Node) -> list[str]:
    """ollama's template.Identifiers for one node."""
    if isinstance(n, ListNode):
        out: list[str] = []
        for c in n.nodes:
            out.extend(identifiers(c))
        return out
    if isinstance(n, TemplateNode):
        if n.pipe is None:
            raise TemplateError("undefined template specified")
        return identifiers(n.pipe)
    if isinstance(n, ActionNode):
        return identifiers(n.pipe)
    if isinstance(n, BranchNode):
        out = identifiers(n.pipe)
        out.extend(identifiers(n.list))
        if n.else_list is not None:
            out.extend(identifiers(n.else_list))
        return out
    if isinstance(n, PipeNode):
        out = []
        for c in n.cmds:
            for a in c.args:
                out.extend(identifiers(a))
        return out
    if isinstance(n, (FieldNode, VariableNode)):
        return list(n.ident)
    return []


class _Cutter:
    """ollama's deleteNode with its "cut after the first .Response" predicate."""

    def __init__(self) -> None:
        self.cut = False

    def pred(self, n: Node) -> bool:
        if isinstance(n, FieldNode) and "Response" in n.ident:
            self.cut = True
            return False
        return self.cut

    def walk(self, n: Node) -> Node | None:  # noqa: C901 - mirrors ollama
        if self.pred(n):
            return None
        if isinstance(n, ListNode):
            n.nodes = [c for c in (self.walk(x) for x in n.nodes) if c is not None]
            return n
        if isinstance(n, BranchNode):
            # ollama walks the embedded BranchNode, then its lists; a list that the
            # predicate removes there is a nil-interface assertion panic in Go.
            if self.pred(n):
                raise TemplateError("template: cannot cut the template after {{ .Response }}")
            lst = self.walk(n.list)
            if lst is None:
                raise TemplateError("template: cannot cut the template after {{ .Response }}")
            n.list = lst  # type: ignore[assignment]
            if n.else_list is not None:
                el = self.walk(n.else_list)
                if el is None:
                    raise TemplateError("template: cannot cut the template after {{ .Response }}")
                n.else_list = el  # type: ignore[assignment]
            return n
        if isinstance(n, ActionNode):
            p = self.walk(n.pipe)
            if p is None:
                return None
            n.pipe = p  # type: ignore[assignment]
            return n
        if isinstance(n, PipeNode):
            cmds = []
            for c in n.cmds:
                args = [a for a in (self.walk(x) for x in c.args) if a is not None]
                if not args:
                    return None
                c.args = args
                cmds.append(c)
            if not cmds:
                return None
            n.cmds = cmds
            return n
        return n


def parse(
    text: str,
    *,
    name: str = "",
    funcs: dict[str, FuncSpec] | None = None,
    missingkey: str = "zero",
    limits: Limits | None = None,
) -> Template:
    """Parse ``text`` as Go's text/template would with ollama's functions.

    This is Go's ``template.New(name).Option("missingkey=zero").Funcs(...).Parse``;
    ollama's extra step (appending ``{{ .Response }}``) is :func:`parse_ollama`.
    """
    fs = ALL_FUNCS if funcs is None else funcs
    try:
        trees = parse_trees(name, text, fs.keys())
    except RecursionError:
        raise TemplateError(f"template: {name}: template nesting too deep") from None
    return Template(name, text, trees, funcs=fs, missingkey=missingkey, limits=limits)


def parse_ollama(text: str, *, limits: Limits | None = None) -> Template:
    """ollama's template.Parse: parse, check the identifiers, append ``{{ .Response }}``
    when neither Messages nor Response is referenced."""
    return parse(text, limits=limits).with_response()




def _children(n: Node) -> list[Node]:
    if isinstance(n, ListNode):
        return list(n.nodes)
    if isinstance(n, BranchNode):
        kids: list[Node] = [n.pipe, n.list]
        if n.else_list is not None:
            kids.append(n.else_list)
        return kids
    if isinstance(n, ActionNode):
        return [n.pipe]
    if isinstance(n, TemplateNode):
        return [n.pipe] if n.pipe is not None else []
    if isinstance(n, PipeNode):
        return list(n.cmds)
    if isinstance(n, CommandNode):
        return list(n.args)
    return []


def _range_uses_field(r: RangeNode, name: str) -> bool:
    stack: list[Node] = [r.pipe]
    while stack:
        n = stack.pop()
        if isinstance(n, FieldNode) and n.ident[0] == name:
            return True
        stack.extend(_children(n))
    return False


def thinking_tags(template: Template) -> tuple[str, str]:
    """ollama's thinking.InferTags: the text around ``.Thinking`` inside a range
    over ``.Messages`` (e.g. ``("<think>", "</think>")``), or ``("", "")``."""
    opening = closing = ""
    ancestors: list[Node] = []

    def visit(n: Node) -> None:
        nonlocal opening, closing
        ancestors.append(n)
        if isinstance(n, FieldNode) and n.ident and n.ident[0] == "Thinking":
            rng = next((a for a in reversed(ancestors) if isinstance(a, RangeNode)), None)
            if rng is not None and _range_uses_field(rng, "Messages"):
                lst = next((a for a in reversed(ancestors) if isinstance(a, ListNode)), None)
                if lst is not None and lst.nodes:
                    if isinstance(lst.nodes[0], TextNode):
                        opening = lst.nodes[0].value.strip(GO_SPACE)
                    if isinstance(lst.nodes[-1], TextNode):
                        closing = lst.nodes[-1].value.strip(GO_SPACE)
        for c in _children(n):
            visit(c)
        ancestors.pop()

    root = template.tree.root
    if root is not None:
        visit(root)
    return opening, closing


def template_capabilities(template: Template) -> list[str]:
    """The capabilities ollama derives from a Go template: ``tools`` (references
    Tools), ``insert`` (references Suffix), ``thinking`` (thinking tags found).
    A template whose identifiers cannot be listed yields none."""
    try:
        v = template.vars()
    except TemplateError:
        return []
    caps = []
    if "tools" in v:
        caps.append("tools")
    if "suffix" in v:
        caps.append("insert")
    opening, closing = thinking_tags(template)
    if opening and closing:
        caps.append("thinking")
    return caps
