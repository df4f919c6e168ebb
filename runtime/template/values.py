"""How Go values are represented in Python for the template interpreter.

Plain Python data maps onto Go's ``encoding/json``-style dynamic values:

===============  ==========================
Python           Go
===============  ==========================
``None``         ``nil`` (an empty interface)
``bool``         ``bool``
``int``          ``int``
``float``        ``float64``
``complex``      ``complex128``
``str``          ``string``
``bytes``        ``[]uint8``
``list``/tuple   ``[]interface {}``
``dict``         ``map[string]interface {}``
===============  ==========================

Typed Go values that ollama hands to its templates (structs such as a chat
message, slices and maps with a ``String`` method) are built from
:class:`GoStruct`, :class:`GoList` and :class:`GoMap`.

Inside the interpreter two more things exist: :data:`INVALID`, Go's zero
``reflect.Value`` (printed as ``<no value>``), and :class:`Iface`, which marks a
value that was read out of an ``interface{}`` slot (a map of ``any``, a slice of
``any``), because Go's error messages and nil handling depend on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class _Invalid:
    """Go's zero ``reflect.Value``: no value at all."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"

    def __bool__(self) -> bool:
        return False


INVALID: Any = _Invalid()


class Iface:
    """A value read through an ``interface{}``; ``v`` is None for a nil interface."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __repr__(self) -> str:
        return f"Iface({self.v!r})"


class Uint8(int):
    """A Go ``uint8`` (what indexing a string yields)."""

    __slots__ = ()


class GoValue:
    """Base of the typed Go values. Subclasses set ``type_name``."""

    type_name: str = "?"
    stringer: Callable[[Any], str] | None = None
    marshal: Callable[[Any], str] | None = None

    def go_string(self) -> str | None:
        """The result of the value's ``String()`` method, or None without one."""
        if self.stringer is None:
            return None
        return self.stringer(self)

    def go_json(self) -> str | None:
        """The result of the value's ``MarshalJSON()`` method, or None without one."""
        if self.marshal is None:
            return None
        return self.marshal(self)


JsonField = tuple[str, str, bool]  # (Go field name, JSON key, omitempty)


class GoStruct(GoValue):
    """A Go struct (``pointer=True``: a non-nil pointer to one).

    ``fields`` keeps declaration order. ``iface_fields`` names the fields declared
    as ``any``. ``json_fields`` gives the ``json`` tags; without it every field is
    marshalled under its Go name.
    """

    __slots__ = ("type_name", "fields", "iface_fields", "json_fields", "pointer",
                 "stringer", "marshal")

    def __init__(
        self,
        type_name: str,
        fields: dict[str, Any],
        *,
        iface_fields: frozenset[str] | set[str] = frozenset(),
        json_fields: list[JsonField] | None = None,
        pointer: bool = False,
        stringer: Callable[[Any], str] | None = None,
        marshal: Callable[[Any], str] | None = None,
    ) -> None:
        self.type_name = type_name
        self.fields = fields
        self.iface_fields = frozenset(iface_fields)
        self.json_fields = json_fields
        self.pointer = pointer
        self.stringer = stringer
        self.marshal = marshal

    def __repr__(self) -> str:
        return f"GoStruct({self.type_name!r}, {self.fields!r})"


class GoList(list, GoValue):  # type: ignore[type-arg]
    """A typed Go slice. ``nil=True`` is a nil slice (empty, marshals as null)."""

    __slots__ = ("type_name", "elem_iface", "nil", "stringer", "marshal")

    def __init__(
        self,
        items: Any = (),
        *,
        type_name: str = "[]interface {}",
        elem_iface: bool = True,
        nil: bool = False,
        stringer: Callable[[Any], str] | None = None,
        marshal: Callable[[Any], str] | None = None,
    ) -> None:
        super().__init__(items)
        self.type_name = type_name
        self.elem_iface = elem_iface
        self.nil = nil and not self
        self.stringer = stringer
        self.marshal = marshal


class GoMap(dict, GoValue):  # type: ignore[type-arg]
    """A typed Go map with string keys. ``zero`` makes the element type's zero value."""

    __slots__ = ("type_name", "elem_iface", "nil", "stringer", "marshal", "zero", "ordered")

    def __init__(
        self,
        items: Any = (),
        *,
        type_name: str = "map[string]interface {}",
        elem_iface: bool = True,
        nil: bool = False,
        stringer: Callable[[Any], str] | None = None,
        marshal: Callable[[Any], str] | None = None,
        zero: Callable[[], Any] | None = None,
        ordered: bool = False,
    ) -> None:
        super().__init__(items)
        self.type_name = type_name
        self.elem_iface = elem_iface
        self.nil = nil and not self
        self.stringer = stringer
        self.marshal = marshal
        self.zero = zero
        # ordered=True: an insertion-ordered map (ollama's orderedmap), which
        # marshals in insertion order. Printing and ranging still sort.
        self.ordered = ordered


def map_key_type(m: dict[Any, Any]) -> str:
    """The Go key type of a plain dict."""
    if isinstance(m, GoMap):
        return "string"
    kinds = {_key_kind(k) for k in m}
    if not kinds or kinds == {"string"}:
        return "string"
    if len(kinds) == 1:
        return kinds.pop()
    return "interface {}"


def _key_kind(k: Any) -> str:
    if isinstance(k, str):
        return "string"
    if isinstance(k, bool):
        return "bool"
    if isinstance(k, int):
        return "int"
    if isinstance(k, float):
        return "float64"
    return "interface {}"


def type_name(v: Any) -> str:
    """Go's ``reflect.Type.String()`` for the dynamic type of ``v``."""
    if isinstance(v, GoValue):
        if isinstance(v, GoStruct) and v.pointer:
            return "*" + v.type_name
        return v.type_name
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, Uint8):
        return "uint8"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, complex):
        return "complex128"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (bytes, bytearray)):
        return "[]uint8"
    if isinstance(v, (list, tuple)):
        return "[]interface {}"
    if isinstance(v, dict):
        return f"map[{map_key_type(v)}]interface {{}}"
    if callable(v):
        return "func()"
    return type(v).__name__


def kind(v: Any) -> str:
    """Go's ``reflect.Kind`` of a (non-Iface) value, as a word."""
    if v is INVALID:
        return "invalid"
    if v is None:
        return "interface"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, Uint8):
        return "uint"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, complex):
        return "complex"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (bytes, bytearray, list, tuple)):
        return "slice"
    if isinstance(v, dict):
        return "map"
    if isinstance(v, GoStruct):
        return "ptr" if v.pointer else "struct"
    if callable(v):
        return "func"
    return "opaque"  # a foreign Python object: printed with str(), no fields


def elem_is_iface(container: Any) -> bool:
    """Whether the elements of a slice or map are declared ``interface{}``."""
    if isinstance(container, (GoList, GoMap)):
        return container.elem_iface
    return isinstance(container, (list, tuple, dict))


def wrap_elem(container: Any, value: Any) -> Any:
    """An element read out of ``container``, marked Iface when the slot is ``any``."""
    if elem_is_iface(container):
        return Iface(value)
    return value


def is_nil_value(v: Any) -> bool:
    """A nil slice, map or interface (not INVALID)."""
    if v is None:
        return True
    if isinstance(v, (GoList, GoMap)):
        return v.nil
    return False
