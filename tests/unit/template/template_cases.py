"""Template test cases, compared with Go's text/template.

Each case is a dict as ``gen/main.go`` reads it (``name``, ``kind``, ``template``,
``data``, ``messages``, ``tools``, ...). ``regen_template_vectors.py`` writes them to
``vectors/cases.json`` and runs the Go program to produce ``vectors/expected.json``.

Cases Go 1.19 (Debian's golang-go) cannot run, because ollama builds with a newer
Go, carry ``"go": False`` and a hand-written ``"expect"`` (output) or
``"expect_error"`` taken from the newer Go's source.
"""

from __future__ import annotations

from typing import Any

Case = dict[str, Any]


def ex(name: str, template: str, data: Any = None, **kw: Any) -> Case:
    c: Case = {"name": name, "kind": "exec", "template": template}
    if data is not None:
        c["data"] = data
    c.update(kw)
    return c


def chat(name: str, template: str, messages: list[dict[str, Any]], **kw: Any) -> Case:
    c: Case = {"name": name, "kind": "chat", "template": template, "messages": messages}
    c.update(kw)
    return c


PEOPLE = {
    "Name": "Ada",
    "Age": 36,
    "Height": 1.65,
    "Admin": True,
    "Tags": ["math", "engines"],
    "Empty": [],
    "EmptyMap": {},
    "Zero": 0,
    "Nil": None,
    "Str": "",
    "M": {"b": 2, "a": 1, "c": [1, "x", None, True, 2.5]},
    "Nested": {"Inner": {"Deep": "yes"}},
    "List": [{"Name": "x", "N": 1}, {"Name": "y", "N": 2}],
}

LANG: list[Case] = [
    # --- text, trim markers, comments ------------------------------------
    ex("text-only", "hello, world\n"),
    ex("empty", ""),
    ex("trim-both", "a  \n {{- 1 -}} \n\t b"),
    ex("trim-left-only", "a  {{- 1 }}  b"),
    ex("trim-right-only", "a  {{ 1 -}}  b"),
    ex("no-trim-negative-number", "a {{-3}} b"),
    ex("trim-keeps-nonspace", "x.{{- 2 -}}.y"),
    ex("comment", "a{{/* a comment */}}b"),
    ex("comment-trim", "a  {{- /* c */ -}}  b"),
    ex("comment-multiline", "a{{/* line1\nline2 */}}b"),
    ex("trim-newlines-between-actions", "{{ 1 }}\n\n{{- 2 }}\n{{ 3 -}}\n\n4"),
    ex("action-spans-lines", "{{ print\n  1\n  2 }}"),
    # --- literals ---------------------------------------------------------
    ex("string-escapes", r'{{ "tab\there\nnl \"q\" \\ \u00e9 \x41 \101 \U0001F600" }}'),
    ex("raw-string", "{{ `raw \\n {{ not an action }}` }}"),
    ex("char-constants", r"{{ 'a' }} {{ '\n' }} {{ '\x41' }} {{ 'é' }} {{ printf `%c` 'z' }}"),
    ex("ints", "{{ 42 }} {{ -7 }} {{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 017 }} {{ 1_000 }} {{ +5 }}"),
    ex("floats", "{{ 1.5 }} {{ 1e6 }} {{ .5 }} {{ 1e-7 }} {{ 0x1p-2 }} {{ 1E3 }} {{ 2.0 }} {{ -0.0 }}"),
    ex("bools", "{{ true }} {{ false }}"),
    ex("complex", "{{ 1+2i }} {{ 2i }} {{ print 3i }}"),
    ex("nil-command", "{{ nil }}"),
    ex("uint-overflow", "{{ 9223372036854775808 }}"),
    ex("integer-overflow", "{{ 99999999999999999999 }}"),
    ex("bad-number", "{{ 3k }}"),
    ex("bad-octal", "{{ 089 }}"),
    # --- fields, maps, missing keys --------------------------------------
    ex("fields", "{{ .Name }} {{ .Age }} {{ .Height }} {{ .Admin }} {{ .Tags }}", PEOPLE),
    ex("nested-field", "{{ .Nested.Inner.Deep }}", PEOPLE),
    ex("missing-key", "[{{ .Missing }}]", PEOPLE),
    ex("nil-value", "[{{ .Nil }}]", PEOPLE),
    ex("missing-nested", "{{ .Missing.Field }}", PEOPLE),
    ex("nil-nested", "{{ .Nil.Field }}", PEOPLE),
    ex("nil-data", "[{{ .X }}] [{{ .X.Y }}] [{{ . }}]"),
    ex("field-of-string", "{{ .Name.First }}", PEOPLE),
    ex("field-of-top-string", "{{ .X }}", "just a string"),
    ex("field-of-list", "{{ .Tags.X }}", PEOPLE),
    ex("field-with-args", "{{ .Name 1 }}", PEOPLE),
    ex("dot-map", "{{ . }}", {"b": [1, 2], "a": {"y": None, "x": "s"}, "c": 1.0}),
    ex("dollar", "{{ $.Name }} {{ with .Nested }}{{ $.Age }} {{ .Inner.Deep }}{{ end }}", PEOPLE),
    ex("print-missing", "{{ print .Missing }}|{{ printf \"%v\" .Missing }}|{{ html .Missing }}", PEOPLE),
    ex("missing-in-var", "{{ $x := .Missing }}[{{ $x }}][{{ $x.Y }}]", PEOPLE),
    ex("missingkey-default", "[{{ .Missing }}][{{ .Missing.Y }}]", PEOPLE, missingkey="default"),
    ex("missingkey-error", "{{ .Missing }}", PEOPLE, missingkey="error"),
    ex("parenthesized-missing-field", "[{{ (.Missing).Y }}]", PEOPLE),
    ex("chain-on-index", "{{ (index .List 1).Name }} {{ (index .List 0).N }}", PEOPLE),
    ex("chain-on-nil", "{{ nil.X }}"),
    ex("int-keys-list-elem-field", "{{ range .List }}{{ .Name }}={{ .N }};{{ end }}", PEOPLE),
    ex("field-on-range-string", "{{ range .Tags }}{{ .X }}{{ end }}", PEOPLE),
    # --- variables ---------------------------------------------------------
    ex("var-declare", "{{ $x := 1 }}{{ $x }} {{ $y := .Name }}{{ $y }}", PEOPLE),
    ex("var-assign", "{{ $x := 1 }}{{ $x = 2 }}{{ $x }}"),
    ex("var-assign-in-range", "{{ $n := 0 }}{{ range .Tags }}{{ $n = . }}{{ end }}{{ $n }}", PEOPLE),
    ex("var-scope-if", "{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}"),
    ex("var-undefined", "{{ $nope }}"),
    ex("var-assign-undeclared", "{{ $x = 1 }}"),
    ex("var-field", "{{ $m := .Nested }}{{ $m.Inner.Deep }}", PEOPLE),
    ex("var-dollar-inside-template", '{{ define "t" }}{{ $ }}{{ end }}{{ template "t" 42 }}'),
    ex("var-two-decl", "{{ $a, $b := 1 }}"),
    # --- pipelines ---------------------------------------------------------
    ex("pipe-final-arg", '{{ "x" | printf "%s-%s" "a" }}'),
    ex("pipe-chain", '{{ .Name | printf "<%s>" | len }}', PEOPLE),
    ex("pipe-parens", "{{ printf \"%d-%d\" (len .Tags) (len (slice .Tags 1)) }}", PEOPLE),
    ex("pipe-not", "{{ .Admin | not }} {{ .Zero | not }}", PEOPLE),
    ex("pipe-nonexec", '{{ .Name | "x" }}', PEOPLE),
    ex("pipe-arg-to-nonfunction", '{{ .Name | .Age }}', PEOPLE),
    ex("pipe-arg-to-literal", "{{ 1 2 }}"),
    ex("pipe-decl-no-print", "{{ $x := 5 }}|{{ $x }}"),
    # --- if / with / range ---------------------------------------------------
    ex("if-truthiness",
       "{{ if .Name }}1{{ end }}{{ if .Str }}2{{ end }}{{ if .Empty }}3{{ end }}{{ if .EmptyMap }}4{{ end }}"
       "{{ if .Zero }}5{{ end }}{{ if .Nil }}6{{ end }}{{ if .Missing }}7{{ end }}{{ if .Tags }}8{{ end }}"
       "{{ if .Height }}9{{ end }}{{ if 0.0 }}A{{ end }}{{ if .M }}B{{ end }}", PEOPLE),
    ex("if-else-if", "{{ range .L }}{{ if eq . 1 }}one{{ else if eq . 2 }}two{{ else }}many{{ end }},{{ end }}",
       {"L": [1, 2, 3]}),
    ex("with-else", "{{ with .Name }}[{{ . }}]{{ else }}none{{ end }} {{ with .Str }}x{{ else }}none{{ end }}",
       PEOPLE),
    ex("with-decl", "{{ with $x := .Nested }}{{ $x.Inner.Deep }}{{ end }}", PEOPLE),
    {"name": "else-with", "kind": "exec", "go": False,
     "template": "{{ with .A }}a={{ . }}{{ else with .B }}b={{ . }}{{ else }}none{{ end }}",
     "data": {"B": "bee"}, "expect": "b=bee"},
    ex("range-list", "{{ range .Tags }}<{{ . }}>{{ end }}", PEOPLE),
    ex("range-index-elem", "{{ range $i, $e := .Tags }}{{ $i }}:{{ $e }} {{ end }}", PEOPLE),
    ex("range-one-var", "{{ range $e := .Tags }}{{ $e }}{{ end }}", PEOPLE),
    ex("range-map-sorted", "{{ range $k, $v := .M }}{{ $k }}={{ $v }};{{ end }}", PEOPLE),
    ex("range-else-empty", "{{ range .Empty }}x{{ else }}empty{{ end }}|{{ range .Missing }}x{{ else }}missing{{ end }}",
       PEOPLE),
    ex("range-break-continue",
       "{{ range $i, $e := .L }}{{ if eq $e 2 }}{{ continue }}{{ end }}{{ if eq $e 4 }}{{ break }}{{ end }}{{ $e }}{{ end }}",
       {"L": [1, 2, 3, 4, 5]}),
    ex("range-dollar-inside", "{{ range .Tags }}{{ . }}@{{ $.Name }} {{ end }}", PEOPLE),
    ex("range-string-error", "{{ range .Name }}{{ . }}{{ end }}", PEOPLE),
    ex("range-float-error", "{{ range .Height }}{{ . }}{{ end }}", PEOPLE),
    {"name": "range-int", "kind": "exec", "go": False,
     "template": "{{ range 3 }}{{ . }}{{ end }}|{{ range $i := .N }}[{{ $i }}]{{ end }}|{{ range 0 }}x{{ else }}none{{ end }}",
     "data": {"N": 2}, "expect": "012|[0][1]|none"},
    {"name": "range-int-two-vars", "kind": "exec", "go": False,
     "template": "{{ range $i, $e := 3 }}{{ end }}",
     "expect_error": "template: :1:19: executing \"\" at <3>: can't use 3 to iterate over more than one variable"},
    ex("range-nested", "{{ range $i, $r := .Rows }}{{ range $r }}{{ $i }}{{ . }} {{ end }}{{ end }}",
       {"Rows": [["a", "b"], ["c"]]}),
    ex("range-var-persist-error", "{{ range $x := .Tags }}{{ end }}{{ $x }}", PEOPLE),
    ex("if-vars-scoped", "{{ if $x := .Name }}{{ $x }}{{ end }}", PEOPLE),
    ex("range-assign", "{{ $e := 0 }}{{ range $e = .Tags }}{{ end }}{{ $e }}", PEOPLE),
    # --- define / template / block ----------------------------------------
    ex("define-template", '{{ define "greet" }}Hello {{ . }}!{{ end }}{{ template "greet" .Name }}', PEOPLE),
    ex("template-no-pipe", '{{ define "x" }}[{{ . }}]{{ end }}{{ template "x" }}'),
    ex("template-undefined", '{{ template "nope" . }}'),
    ex("block", '{{ block "b" .Tags }}{{ range . }}-{{ . }}{{ end }}{{ end }}', PEOPLE),
    ex("define-only", '{{ define "x" }}X{{ end }}'),
    ex("template-recursion",
       '{{ define "r" }}{{ if . }}{{ len . }}{{ template "r" (slice . 1) }}{{ end }}{{ end }}{{ template "r" .L }}',
       {"L": [1, 2, 3, 4]}),
    ex("template-vars-not-inherited", '{{ define "t" }}{{ $x }}{{ end }}{{ $x := 1 }}{{ template "t" }}'),
    ex("template-error-location", '{{ define "t" }}\n  {{ .A.B }}{{ end }}{{ template "t" . }}', {"A": 1}),
    ex("multiple-definition", '{{ define "a" }}1{{ end }}{{ define "a" }}2{{ end }}'),
    ex("redefine-empty", '{{ define "a" }}{{ end }}{{ define "a" }}2{{ end }}{{ template "a" }}'),
    # --- and / or / not / comparisons -------------------------------------
    ex("and-or-values",
       '{{ and 1 "x" }}|{{ and 0 "x" }}|{{ or 0 "" }}|{{ or 0 "y" 3 }}|{{ and }}', {}),
    ex("and-or-values-ok", '{{ and 1 "x" }}|{{ and 0 "x" }}|{{ or 0 "" }}|{{ or 0 "y" 3 }}|{{ or .Missing "dflt" }}', {}),
    ex("and-short-circuit", "{{ and false (index .L 99) }}|{{ or true (index .L 99) }}", {"L": [1]}),
    ex("and-no-short-circuit-error", "{{ and true (index .L 99) }}", {"L": [1]}),
    ex("and-pipe-final", "{{ 0 | and 1 }}|{{ 2 | and 1 }}|{{ 5 | or 0 }}", {}),
    ex("and-missing", "[{{ and .Missing 1 }}][{{ or .Missing .Nil }}]", PEOPLE),
    ex("not", "{{ not 0 }} {{ not 1 }} {{ not \"\" }} {{ not .Tags }} {{ not .Missing }} {{ not nil }}", PEOPLE),
    ex("eq-basic", '{{ eq 1 1 }} {{ eq "a" "b" }} {{ eq .Name "Ada" }} {{ eq .Age 36 }} {{ eq 1.5 1.5 }} {{ eq true true }}',
       PEOPLE),
    ex("eq-multi", "{{ eq .Age 1 2 36 }} {{ eq .Name \"x\" \"y\" }}", PEOPLE),
    ex("eq-missing-arg", "{{ eq 1 }}"),
    # Go 1.21+ names the types in this message; Debian's Go 1.19 does not.
    {"name": "eq-incompatible", "kind": "exec", "go": False, "template": "{{ eq .Height 1 }}", "data": PEOPLE,
     "expect_error": 'template: :1:3: executing "" at <eq .Height 1>: error calling eq: '
                     'incompatible types for comparison: float64 and int'},
    {"name": "eq-int-float", "kind": "exec", "go": False, "template": "{{ eq 1 1.0 }}",
     "expect_error": 'template: :1:3: executing "" at <eq 1 1.0>: error calling eq: '
                     'incompatible types for comparison: int and float64'},
    ex("eq-nil", "{{ eq nil nil }} {{ eq .Missing nil }} {{ eq .Nil .Missing }}", PEOPLE),
    ex("eq-missing-vs-string", "{{ eq .Missing \"x\" }}", PEOPLE),
    ex("eq-lists", "{{ eq .Tags .Tags }}", PEOPLE),
    ex("eq-list-map", "{{ eq .Tags .M }}", PEOPLE),
    ex("ne", '{{ ne 1 2 }} {{ ne "a" "a" }} {{ ne .Name "Bob" }}', PEOPLE),
    ex("lt-family",
       '{{ lt 1 2 }} {{ le 2 2 }} {{ gt 3 2 }} {{ ge 1 2 }} {{ lt "a" "b" }} {{ lt 1.5 2.5 }} {{ ge "b" "a" }} {{ le 3 2 }}'),
    ex("lt-bool", "{{ lt true false }}"),
    {"name": "lt-int-float", "kind": "exec", "go": False, "template": "{{ lt 1 2.5 }}",
     "expect_error": 'template: :1:3: executing "" at <lt 1 2.5>: error calling lt: '
                     'incompatible types for comparison: int and float64'},
    ex("eq-incompatible-missing-ok", "{{ eq .Missing 1 }} {{ eq 1 .Missing }}", PEOPLE),
    ex("lt-list", "{{ lt .Tags 1 }}", PEOPLE),
    ex("lt-missing", "{{ lt .Missing 1 }}", PEOPLE),
    ex("gt-strings-unicode", '{{ gt "é" "z" }} {{ lt "Z" "a" }}'),
    # --- len / index / slice ------------------------------------------------
    ex("len", '{{ len .Tags }} {{ len .M }} {{ len .Name }} {{ len "héllo" }} {{ len .Empty }}', PEOPLE),
    ex("len-nil", "{{ len .Missing }}", PEOPLE),
    ex("len-int", "{{ len 3 }}"),
    ex("len-invalid-var", "{{ $x := .Missing }}{{ len $x }}", PEOPLE),
    ex("index", '{{ index .Tags 1 }} {{ index .M "a" }} {{ index .M "c" 1 }} {{ index .Nested "Inner" "Deep" }}', PEOPLE),
    ex("index-missing-key", "[{{ index .M \"zz\" }}]", PEOPLE),
    ex("index-out-of-range", "{{ index .Tags 5 }}", PEOPLE),
    ex("index-at-len", "{{ index .Tags 2 }}", PEOPLE),
    ex("index-negative", "{{ index .Tags -1 }}", PEOPLE),
    ex("index-string", '{{ index "hello" 1 }} {{ index .Name 0 }}', PEOPLE),
    ex("index-nil", "{{ index .Missing 1 }}", PEOPLE),
    ex("index-bad-key-type", "{{ index .M 1 }}", PEOPLE),
    ex("index-list-with-string", '{{ index .Tags "a" }}', PEOPLE),
    ex("index-of-int", "{{ index 5 1 }}"),
    ex("index-no-indexes", "{{ index .Tags }}", PEOPLE),
    ex("index-nested-nil", "{{ index .M \"c\" 2 0 }}", PEOPLE),
    ex("slice", '{{ slice .Tags 1 }} {{ slice .Tags 0 1 }} {{ slice .Tags }} {{ slice "hello" 1 3 }} {{ slice .Name 1 }}',
       PEOPLE),
    ex("slice-errors-range", "{{ slice .Tags 3 }}", PEOPLE),
    ex("slice-inverted", "{{ slice .Tags 2 1 }}", PEOPLE),
    ex("slice-string-3", '{{ slice "abc" 0 1 2 }}'),
    ex("slice-3", "{{ slice .L 0 1 2 }}", {"L": [1, 2, 3]}),
    ex("slice-int", "{{ slice 5 1 }}"),
    ex("slice-iface-index", "{{ slice .Tags .One }}", {"Tags": ["a", "b"], "One": 1}),
    ex("slice-too-many", "{{ slice .L 0 1 2 3 }}", {"L": [1, 2, 3]}),
    # --- print / printf / println ---------------------------------------------
    ex("print-spacing", '{{ print 1 2 }}|{{ print "a" "b" }}|{{ print 1 "a" 2 }}|{{ print "a" 1 2 "b" }}|{{ print nil 1 }}|{{ print true false }}'),
    ex("println", '{{ println 1 "a" 2 }}|{{ println }}'),
    ex("printf-verbs",
       '{{ printf "%s|%d|%v|%q|%t|%f|%x|%X|%o|%b|%e|%g|%c|%U|%%" "str" 42 .M "q\\"uote" true 3.14159 255 255 8 5 1234.5678 0.000012345 65 9731 }}',
       PEOPLE),
    ex("printf-width-prec",
       '{{ printf "[%5d][%-5d][%05d][%+d][% d][%.2f][%8.3f][%-8.2f|][%5s][%-5s|][%.2s][%05.1f][%x][%#x][%#o]" 42 42 42 42 42 3.14159 3.14159 2.5 "ab" "ab" "abcdef" -2.5 "hi" 255 8 }}'),
    ex("printf-bad-verbs", '{{ printf "%d|%s|%t|%f" "x" 5 1 "y" }}'),
    ex("printf-missing-extra", '{{ printf "%d %d" 1 }}|{{ printf "%d" 1 2 "x" }}|{{ printf "%!" }}|{{ printf "%" }}'),
    ex("printf-arg-index", '{{ printf "%[2]d %[1]d %[3]d" 1 2 }}'),
    ex("printf-star", '{{ printf "[%*d][%-*d][%.*f]" 5 1 4 2 2 3.14159 }}'),
    ex("printf-sharp-v", '{{ printf "%#v|%#v|%#v|%#v|%+v" "s" 1 .Tags .M .List }}', PEOPLE),
    ex("printf-T", '{{ printf "%T %T %T %T %T %T %T" 1 1.5 "s" true .Tags .M nil }}', PEOPLE),
    ex("printf-q-variants", '{{ printf "%q %+q %#q %q %q" "héllo\\n" "héllo" "back`tick" 65 "\\x00\\x7f" }}'),
    ex("printf-x-string", '{{ printf "%x|% x|%#x|%X|% X" "hi!" "hi!" "hi!" "hi!" "hi!" }}'),
    ex("printf-floats",
       '{{ printf "%v %v %v %v %v %v %v %v" 1e6 1e21 123456.0 1234567.0 0.0001 0.00001 100.0 1e-320 }}'),
    ex("printf-g-prec", '{{ printf "%.3g|%.3g|%.10g|%g|%G|%.0f|%.0f|%.1e" 1234.5678 1.0 3.14159 1e-7 1e21 2.5 3.5 0.15 }}'),
    ex("printf-nil-verbs", '{{ printf "%d|%s|%v" nil nil nil }}'),
    ex("printf-list-verbs", '{{ printf "%d|%s|%q|%x" .L .S .S .S }}', {"L": [1, 2], "S": ["a", "b"]}),
    ex("printf-nonstring-format", "{{ printf 5 }}"),
    ex("printf-missing-format", "{{ printf .Missing }}", PEOPLE),
    ex("printf-int-sharp", '{{ printf "%#v %#v %#v" 1.0 1e6 true }}'),
    ex("printf-plus-float", '{{ printf "%+.1f %+.1f % .1f %08.3f %-8.3f| %+08d" 1.0 -1.0 1.0 -3.14159 3.14159 42 }}'),
    ex("printf-c-U-sharp", '{{ printf "%#U %U %c %q" 128512 10 128512 128512 }}'),
    ex("printf-bad-width", '{{ printf "%*d" "x" 1 }}'),
    # --- values printing ----------------------------------------------------
    ex("print-values", "{{ .M }} {{ .Tags }} {{ .Empty }} {{ .EmptyMap }} {{ .List }}", PEOPLE),
    ex("print-floats", "{{ .A }} {{ .B }} {{ .C }} {{ .D }} {{ .E }} {{ .F }} {{ .G }} {{ .H }}",
       {"A": 1.0, "B": 1e21, "C": 1e20, "D": 1.5e-7, "E": 123456789.0, "F": -0.5, "G": 3.0e300, "H": 0.1}),
    ex("print-unicode", "{{ .S }}", {"S": "héllo wörld ✓ 😀"}),
    ex("float-battery",
       "{{ range .F }}{{ . }}|{{ printf \"%e|%.3f|%g|%.4g|%8.2e|%.0e|%G\" . . . . . . . }}|{{ json . }}\n{{ end }}",
       {"F": [0.30000000000000004, 0.3333333333333333, 9007199254740992.0, 1e15, 1e16, 1.2345678901234567e17,
              5e-324, 1.7976931348623157e308, 100.5, 1e-4, 9.999999e-5, 0.5, 2.5, 1e100, 123456.789, -1.5e-10,
              0.000123, 999999.9999, 1e21, 1e-6, 6.02214076e23]}),
    ex("int-battery", "{{ range .I }}{{ . }} {{ printf \"%x %o %b %c %q %U %08d %-8d| %+d\" . . . . . . . . . }}\n{{ end }}",
       {"I": [0, 1, -1, 65, 255, 9007199254740993, -9223372036854775808, 9223372036854775807, 127, 0x1F600]}),
    ex("error-column-bytes", "héllo wörld {{ .X.Y }}", {"X": 1}),
    ex("error-column-second-line", "a\nbé {{ .X.Y }}", {"X": 1}),
    ex("unicode-field", "{{ .Ñame }} {{ .日本 }}", {"Ñame": "n", "日本": "j"}),
    ex("trim-tabs", "a\t\t{{-\t1\t-}}\t\tb"),
    ex("trim-no-space-after-dash", "a {{-1}} b {{1-}} c"),
    ex("err-define-inside-define", '{{ define "a" }}{{ define "b" }}{{ end }}{{ end }}'),
    ex("range-map-break", "{{ range $k, $v := .M }}{{ if eq $k \"b\" }}{{ break }}{{ end }}{{ $k }}{{ end }}", PEOPLE),
    ex("html-list", "{{ html .Tags }} {{ js .M }} {{ urlquery .Tags }}", PEOPLE),
    ex("print-bool-list", "{{ print .B }} {{ printf \"%v %t\" .B .B }}", {"B": [True, False]}),
    ex("with-var-reuse", "{{ with $x := .Name }}{{ $x }}{{ end }}{{ with .Missing }}x{{ else }}{{ .Name }}{{ end }}", PEOPLE),
    ex("if-else-chain-vars", "{{ if $a := .Zero }}a{{ else if $b := .Name }}{{ $a }}-{{ $b }}{{ end }}", PEOPLE),
    ex("nested-templates-dot",
       '{{ define "item" }}<{{ .Name }}:{{ .N }}>{{ end }}{{ define "list" }}{{ range . }}{{ template "item" . }}{{ end }}{{ end }}'
       '{{ template "list" .List }}', PEOPLE),
    ex("index-chain-field", '{{ (index .List 0).Name }}{{ with index .List 1 }}{{ .N }}{{ end }}', PEOPLE),
    ex("len-of-index", '{{ len (index .M "c") }}', PEOPLE),
    ex("slice-of-messages-last",
       "{{ range $i, $m := .L }}{{ $last := eq (len (slice $.L $i)) 1 }}{{ $m }}{{ if $last }}!{{ end }}{{ end }}",
       {"L": ["a", "b", "c"]}),
    # --- html / js / urlquery / call ------------------------------------------
    ex("html", '{{ html "<a href=\\"x\\">&\'</a>" }} {{ html 1 "<" 2 }} {{ "<b>" | html }}'),
    ex("js", '{{ js "it\'s \\"q\\" <x> & = \\\\ \\n é \\u2028" }}'),
    ex("urlquery", '{{ urlquery "a b&c=d/é?~_.-" }} {{ urlquery 1 2 }}'),
    ex("call-nil", "{{ call .Missing }}", PEOPLE),
    {"name": "call-nonfunc", "kind": "exec", "go": False, "template": "{{ call .Name 1 }}", "data": PEOPLE,
     "expect_error": 'template: :1:3: executing "" at <call .Name 1>: error calling call: non-function .Name of type string'},
    # --- json and ollama functions -------------------------------------------
    ex("json-basic", "{{ json . }}", PEOPLE),
    ex("json-escapes", "{{ json .S }}", {"S": "<b>&\"quoted\"\\ \n\t\r \u0001 \u2028 \u2029 é 😀 \u007f"}),
    ex("json-floats", "{{ json . }}",
       {"a": 1.0, "b": 1e21, "c": 1e20, "d": 1e-7, "e": 0.000001, "f": 123456789.123, "g": -0.0, "h": 1.5e-300,
        "i": 100, "j": -42, "k": 0.1, "l": 5e-324}),
    ex("json-nested", "{{ json .M }}|{{ json .Tags }}|{{ json .Empty }}|{{ json .EmptyMap }}|{{ json .Nil }}", PEOPLE),
    ex("json-scalars", '{{ json 1 }}|{{ json 1.5 }}|{{ json "s" }}|{{ json true }}|{{ json nil }}|{{ json .Missing }}', PEOPLE),
    ex("json-pipe", "{{ .M | json }}", PEOPLE),
    ex("json-unicode-keys", "{{ json . }}", {"é": 1, "a": 2, "Z": 3, "_": 4, "<": 5}),
    ex("current-date", "{{ currentDate }} {{ yesterdayDate }} {{ currentDate \"2006\" }}"),
    ex("current-date-bad-arg", "{{ currentDate 1 }}"),
    ex("ts-type-not-property", "{{ toTypeScriptType .Name }}", PEOPLE),
    # --- parse errors ----------------------------------------------------------
    ex("err-unclosed-action", "hello {{ .Name "),
    ex("err-unclosed-action-multiline", "a\n{{ .Name\n\n"),
    ex("err-unexpected-eof", "{{ if .A }}x"),
    ex("err-unexpected-end", "x{{ end }}"),
    ex("err-unexpected-else", "{{ else }}"),
    ex("err-missing-if-value", "{{ if }}x{{ end }}"),
    ex("err-undefined-function", "{{ nosuch 1 }}"),
    ex("err-bad-character", "{{ .A# }}"),
    ex("err-unterminated-string", '{{ "abc }}'),
    ex("err-unterminated-raw", "{{ `abc }}"),
    ex("err-unterminated-char", "{{ 'a }}"),
    ex("err-dot-after-term", '{{ "x".Y }}'),
    ex("err-too-many-decls", "{{ $a, $b, $c := .L }}"),
    ex("err-range-decl-only", "{{ range $a, 1 := .L }}{{ end }}"),
    ex("err-break-outside", "{{ break }}"),
    ex("err-continue-outside", "{{ if 1 }}{{ continue }}{{ end }}"),
    ex("err-double-else", "{{ if 1 }}a{{ else }}b{{ else }}c{{ end }}"),
    ex("err-empty-pipe", "{{ }}"),
    ex("err-empty-command", "{{ 1 | }}"),
    ex("err-unclosed-paren", "{{ (1 }}"),
    ex("err-extra-paren", "{{ 1) }}"),
    ex("err-unclosed-comment", "{{/* x }}"),
    ex("err-comment-not-closed-by-delim", "{{/* x */ 1 }}"),
    ex("err-define-no-name", "{{ define x }}{{ end }}"),
    ex("err-bad-escape", r'{{ "\q" }}'),
    ex("err-malformed-char", "{{ 'ab' }}"),
    ex("err-colon", "{{ $x : 1 }}"),
    ex("err-unrecognized-char", "{{ \x01 }}"),
    ex("err-else-if-chain-end", "{{ if 1 }}a{{ else if 2 }}b"),
    ex("err-template-name", "{{ template .X }}"),
    ex("err-error-line-number", "line1\nline2 {{ .A }}\nline3 {{ if }}\n"),
    ex("err-in-action-started-at", "{{ .A \n\n 'x\n }}"),
    ex("err-assign-undeclared-parse", "{{ $y = 2 }}"),
    ex("err-item-quote-counts-bytes", "{{ 1$énilbreak }}"),
    ex("err-item-quote-long", "{{ 1$abcdefghijklmnop }}"),
    ex("err-complex-syntax", "{{ +-2i }}"),
    # --- ollama's Parse and Vars -----------------------------------------------
    {"name": "ollama-append-response", "kind": "ollama", "template": "{{ .System }} {{ .Prompt }}",
     "data": {"System": "S", "Prompt": "P", "Response": "R"}},
    {"name": "ollama-no-append-with-response", "kind": "ollama",
     "template": "{{ .Prompt }}[{{ .Response }}]", "data": {"Prompt": "P", "Response": "R"}},
    {"name": "ollama-no-append-with-messages", "kind": "ollama",
     "template": "{{ range .Messages }}{{ .Content }}{{ end }}", "data": {"Messages": [{"Content": "m"}], "Response": "R"}},
    {"name": "ollama-response-case-insensitive", "kind": "ollama",
     "template": "{{ .Prompt }}{{ $.response }}", "data": {"Prompt": "P", "Response": "R"}},
    {"name": "ollama-template-without-pipe", "kind": "ollama",
     "template": '{{ define "x" }}x{{ end }}{{ template "x" }}', "data": {}},
    {"name": "vars-basic", "kind": "vars",
     "template": "{{ .System }}{{ range $i, $m := .Messages }}{{ $m.Role }}{{ if .ToolCalls }}{{ end }}{{ end }}{{ (.X).Y }}"},
    {"name": "vars-defines", "kind": "vars",
     "template": '{{ define "a" }}{{ .Tools }}{{ end }}{{ template "a" .Suffix }}{{ json .Prompt }}'},
    {"name": "vars-undefined-template", "kind": "vars", "template": '{{ template "a" }}'},
]


# ---------------------------------------------------------------------------
# real templates

CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""

SMOLLM2 = """{{- if not (and .Messages (eq (index .Messages 0).Role "system")) }}<|im_start|>system
You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
{{ end }}
{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""

LLAMA3 = """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

"""

LLAMA31_TOOLS = """{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>
{{- if .System }}

{{ .System }}
{{- end }}
{{- if .Tools }}

Cutting Knowledge Date: December 2023

When you receive a tool call response, use the output to format an answer to the orginal user question.

You are a helpful assistant with tool calling capabilities.
{{- end }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>
{{- if and $.Tools $last }}

Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.

Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}. Do not use variables.

{{ range $.Tools }}
{{- . }}
{{ end }}
Question: {{ .Content }}<|eot_id|>
{{- else }}

{{ .Content }}<|eot_id|>
{{- end }}{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}
{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"""

MISTRAL = """[INST] {{ range $index, $_ := .Messages }}
{{- if eq .Role "system" }}{{ .Content }}

{{ else if eq .Role "user" }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }} {{ .Content }}</s>[INST] {{ end }}
{{- end }}"""

MISTRAL_TOOLS = """{{- range $index, $_ := .Messages }}
{{- if eq .Role "system" }}[SYSTEM_PROMPT]{{ .Content }}[/SYSTEM_PROMPT]
{{- else if eq .Role "user" }}
{{- if and (le (len (slice $.Messages $index)) 2) $.Tools }}[AVAILABLE_TOOLS]{{ $.Tools }}[/AVAILABLE_TOOLS]
{{- end }}[INST]{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .Content }}{{ .Content }}
{{- if not (eq (len (slice $.Messages $index)) 1) }}</s>
{{- end }}
{{- else if .ToolCalls }}[TOOL_CALLS][
{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}
{{- end }}]</s>
{{- end }}
{{- else if eq .Role "tool" }}[TOOL_RESULTS]{"content": {{ .Content }}}[/TOOL_RESULTS]
{{- end }}
{{- end }}"""

GEMMA = """{{- $system := "" }}
{{- range .Messages }}
{{- if eq .Role "system" }}
{{- if not $system }}{{ $system = .Content }}
{{- else }}{{ $system = printf "%s\\n\\n%s" $system .Content }}
{{- end }}
{{- continue }}
{{- else if eq .Role "user" }}<start_of_turn>user
{{- if $system }}
{{ $system }}
{{- $system = "" }}
{{- end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{- end }}
{{ .Content }}<end_of_turn>
{{ end }}<start_of_turn>model
"""

GEMMA3 = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<start_of_turn>user
{{- if and (eq $i 1) $.System }}
{{ $.System }}
{{ end }}
{{ .Content }}<end_of_turn>
{{ else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}<end_of_turn>
{{ end }}
{{- if $last }}<start_of_turn>model
{{ end }}
{{- end }}"""

PHI3 = """{{- range .Messages }}<|{{ .Role }}|>
{{ .Content }}<|end|>
{{ end }}<|assistant|>
"""

LEGACY = "{{ .System }} {{ .Prompt }}"

LEGACY_CHATML = """{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ .Response }}<|im_end|>
"""

ALPACA = """{{ if .System }}{{ .System }}

{{ end }}{{ if .Prompt }}### Instruction:
{{ .Prompt }}

{{ end }}### Response:
{{ .Response }}

"""

QWEN25_TOOLS = """{{- if .Messages }}
{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- else }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"""

COMMAND_R_TOOLS = """{{- if .Tools }}## Available Tools
{{- range .Tools }}
def {{ .Function.Name }}(
{{- range $name, $property := .Function.Parameters.Properties }}{{ $name }}: {{ $property.Type }}, {{ end }}) -> List[Dict]:
    '''{{ .Function.Description }}
{{- range $name, $property := .Function.Parameters.Properties }}
        {{ $name }} ({{ $property.Type }}): {{ $property.Description }} [{{ toTypeScriptType $property }}]
{{- end }}
    '''
{{- end }}
{{ end }}
{{- range .Messages }}<|{{ .Role }}|>{{ .Content }}{{ range .ToolCalls }}{{ .ID }}:{{ .Function.Index }}:{{ json .Function.Arguments }}{{ end }}
{{ end }}"""

THINKING = """{{- range .Messages }}<|{{ .Role }}|>{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}
{{ end }}{{ if .IsThinkSet }}think={{ .Think }} level={{ .ThinkLevel }}{{ else }}unset{{ end }}"""

CODE_SUFFIX = """{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>
{{- else }}{{ .Prompt }}
{{- end }}"""

STRUCT_PRINTING = """{{ range .Messages }}{{ . }}|{{ .Images }}|{{ .ToolCalls }}
{{ range .ToolCalls }}{{ . }}|{{ .Function }}|{{ .Function.Arguments }}|{{ len .Function.Arguments }}
{{ range $k, $v := .Function.Arguments }}{{ $k }}={{ $v }};{{ end }}
{{ end }}{{ end }}{{ range .Tools }}{{ .Function }}
{{ .Function.Parameters.Properties }}
{{ range $k, $v := .Function.Parameters.Properties }}{{ $k }}:{{ $v.Type }}:{{ $v.Description }}:{{ $v.Enum }};{{ end }}
{{ end }}[{{ .Tools }}][{{ json .Tools }}]"""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather for a location & return <html>",
        "parameters": {
            "type": "object",
            "required": ["location", "format"],
            "properties": {
                "location": {"type": "string", "description": "The city, e.g. Paris"},
                "format": {"type": "string", "enum": ["celsius", "fahrenheit"],
                           "description": "Unit"},
                "days": {"type": ["integer", "null"], "description": "How many days"},
                "options": {"type": "object", "properties": {"z": {"type": "string"}, "a": {"type": "number"}}},
                "tags": {"type": "array", "items": {"type": "string", "minLength": 1}},
            },
        },
    },
}

SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "parameters": {"type": "object", "properties": {"q": {"anyOf": [{"type": "string"}, {"type": "null"}]}}},
    },
}

CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi! How can I help?"},
    {"role": "user", "content": "What is 2+2?"},
]

MERGE = [
    {"role": "system", "content": "Sys one."},
    {"role": "system", "content": "Sys two."},
    {"role": "user", "content": "part 1"},
    {"role": "user", "content": "part 2"},
    {"role": "assistant", "content": "a1"},
    {"role": "assistant", "content": "a2"},
    {"role": "user", "content": "last"},
]

TOOL_CONVERSATION = [
    {"role": "system", "content": "Use tools when needed."},
    {"role": "user", "content": "What's the weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "function": {"index": 0, "name": "get_current_weather",
                                      "arguments": {"location": "Paris", "format": "celsius", "days": 3,
                                                    "big": 1000000, "ratio": 0.5, "html": "<b>&",
                                                    "nested": {"z": [1, 2.5, None], "a": True}}}},
        {"function": {"index": 1, "name": "search", "arguments": {}}},
        {"function": {"index": 2, "name": "noargs"}},
    ]},
    {"role": "tool", "content": "22 degrees", "tool_name": "get_current_weather", "tool_call_id": "call_1"},
    {"role": "tool", "content": "{\"results\": []}", "tool_name": "search"},
]

PREFILL = [
    {"role": "user", "content": "Write a haiku"},
    {"role": "assistant", "content": "Autumn moon"},
]

CHAT: list[Case] = [
    chat("chatml-conversation", CHATML, CONVERSATION),
    chat("chatml-merge", CHATML, MERGE),
    chat("chatml-empty", CHATML, []),
    chat("smollm2-default-system", SMOLLM2, CONVERSATION[1:]),
    chat("smollm2-own-system", SMOLLM2, CONVERSATION),
    chat("smollm2-model-system", SMOLLM2, CONVERSATION[1:], system="Model default system."),
    chat("smollm2-empty", SMOLLM2, []),
    chat("llama3-conversation", LLAMA3, CONVERSATION),
    chat("llama3-merge", LLAMA3, MERGE),
    chat("llama31-tools-question", LLAMA31_TOOLS, CONVERSATION, tools=[WEATHER_TOOL, SEARCH_TOOL]),
    chat("llama31-tools-calls", LLAMA31_TOOLS, TOOL_CONVERSATION, tools=[WEATHER_TOOL]),
    chat("llama31-no-tools", LLAMA31_TOOLS, CONVERSATION),
    chat("llama31-empty-tools", LLAMA31_TOOLS, CONVERSATION, tools=[]),
    chat("mistral-conversation", MISTRAL, CONVERSATION),
    chat("mistral-merge", MISTRAL, MERGE),
    chat("mistral-tools", MISTRAL_TOOLS, TOOL_CONVERSATION + [{"role": "user", "content": "thanks"}],
         tools=[WEATHER_TOOL, SEARCH_TOOL]),
    chat("mistral-tools-question", MISTRAL_TOOLS, CONVERSATION, tools=[WEATHER_TOOL]),
    chat("gemma-conversation", GEMMA, CONVERSATION),
    chat("gemma-merge", GEMMA, MERGE),
    chat("gemma3-conversation", GEMMA3, CONVERSATION),
    chat("phi3-conversation", PHI3, CONVERSATION),
    chat("qwen25-tools", QWEN25_TOOLS, TOOL_CONVERSATION, tools=[WEATHER_TOOL, SEARCH_TOOL]),
    chat("qwen25-tools-question", QWEN25_TOOLS, CONVERSATION, tools=[WEATHER_TOOL]),
    chat("qwen25-no-messages", QWEN25_TOOLS, []),
    chat("command-r-tools", COMMAND_R_TOOLS, TOOL_CONVERSATION, tools=[WEATHER_TOOL, SEARCH_TOOL]),
    chat("thinking-on", THINKING, [{"role": "user", "content": "q"},
                                   {"role": "assistant", "content": "a", "thinking": "hmm <x>"},
                                   {"role": "user", "content": "q2"}], think=True),
    chat("thinking-level", THINKING, [{"role": "user", "content": "q"}], think="high"),
    chat("thinking-false", THINKING, [{"role": "user", "content": "q"}], think=False),
    chat("thinking-unset", THINKING, [{"role": "user", "content": "q"}]),
    chat("struct-printing", STRUCT_PRINTING, TOOL_CONVERSATION[1:3]
         + [{"role": "user", "content": "img", "images": ["aGVsbG8="]}], tools=[WEATHER_TOOL, SEARCH_TOOL]),
    chat("struct-printing-no-tools", STRUCT_PRINTING, [{"role": "user", "content": "x"}]),
    chat("legacy-single", LEGACY, [{"role": "user", "content": "Hi"}]),
    chat("legacy-conversation", LEGACY, CONVERSATION),
    chat("legacy-merge", LEGACY, MERGE),
    chat("legacy-prefill", LEGACY, PREFILL),
    chat("legacy-systems-positional", LEGACY, [
        {"role": "user", "content": "u1"}, {"role": "system", "content": "s1"},
        {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"},
        {"role": "system", "content": "s2"}, {"role": "tool", "content": "ignored"},
    ]),
    chat("legacy-chatml", LEGACY_CHATML, CONVERSATION),
    chat("legacy-chatml-prefill", LEGACY_CHATML, PREFILL, system="Be brief."),
    chat("legacy-alpaca", ALPACA, CONVERSATION),
    chat("legacy-cut-inside-if",
         "{{ if .System }}[{{ .System }}]{{ end }}{{ .Prompt }}{{ if .Prompt }}<{{ .Response }}>{{ end }}tail",
         [{"role": "user", "content": "p1"}, {"role": "assistant", "content": "r1"},
          {"role": "user", "content": "p2"}]),
    chat("legacy-no-funcs-in-last-turn", "{{ json .Prompt }}:{{ .Response }}",
         [{"role": "user", "content": "p1"}, {"role": "assistant", "content": "r1"},
          {"role": "user", "content": "p2"}]),
    chat("legacy-missing-key-last-turn", "{{ .Prompt }}{{ .Response }}{{ .Nope.X }}",
         [{"role": "user", "content": "p1"}]),
    chat("legacy-missing-key-earlier-turn", "{{ .Prompt }}{{ .Response }}{{ .Nope.X }}",
         [{"role": "user", "content": "p1"}, {"role": "assistant", "content": "r1"},
          {"role": "user", "content": "p2"}]),
    chat("generate-suffix", CODE_SUFFIX, [], prompt="def f(", suffix="    return x"),
    chat("generate-suffix-qwen", QWEN25_TOOLS, [], prompt="p", suffix="s"),
    chat("generate-legacy-prompt", CODE_SUFFIX, [{"role": "user", "content": "def f("}]),
    chat("messages-and-response", "{{ range .Messages }}{{ .Content }}{{ end }}[{{ .Response }}]{{ .Prompt }}",
         [{"role": "user", "content": "u"}]),
    chat("json-messages-and-tools", "{{ json .Messages }}|{{ range .Tools }}{{ json . }}{{ end }}|{{ json .Tools }}",
         TOOL_CONVERSATION[1:3] + [{"role": "user", "content": "i", "images": ["aGk="]}], tools=[SEARCH_TOOL]),
    chat("json-no-messages", "{{ json .Messages }}|{{ json .Tools }}|{{ .Tools }}|{{ len .Messages }}", []),
    chat("roles-lower-cased", CHATML, [{"role": "System", "content": "s"}, {"role": "USER", "content": "u"},
                                       {"role": "user", "content": "v"}]),
    chat("roles-lower-cased-legacy", LEGACY, [{"role": "User", "content": "u"}, {"role": "Assistant", "content": "a"}]),
    chat("chat-template-error", "{{ range .Messages }}{{ .Nope }}{{ end }}", [{"role": "user", "content": "u"}]),
]

QWEN3 = """{{- if .Messages }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if (and $.IsThinkSet (and .Thinking (or $last (gt $i 0)))) -}}
<think>{{ .Thinking }}</think>
{{ end -}}
{{ if .Content }}{{ .Content }}{{ end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ if and $.IsThinkSet (not $.Think) -}}
<think>

</think>

{{ end -}}
{{ end }}
{{- end }}
{{- else }}{{ .Prompt }}{{ end }}"""

CAPS: list[Case] = [
    {"name": "caps-" + name, "kind": "caps", "template": t}
    for name, t in [
        ("chatml", CHATML), ("llama31", LLAMA31_TOOLS), ("qwen25", QWEN25_TOOLS), ("code", CODE_SUFFIX),
        ("thinking", THINKING), ("qwen3", QWEN3), ("legacy", LEGACY), ("command-r", COMMAND_R_TOOLS),
        ("thinking-outside-range", "{{ .Thinking }}<think>{{ range .Messages }}{{ end }}"),
        ("thinking-in-dollar-range", "{{ range $.Messages }}<t>{{ .Thinking }}</t>{{ end }}"),
        ("broken-vars", '{{ define "x" }}{{ .Tools }}{{ end }}{{ template "x" }}'),
    ]
] + [
    chat("qwen3-think-off", QWEN3, CONVERSATION, think=False),
    chat("qwen3-think-on", QWEN3, [*CONVERSATION[:2], {"role": "assistant", "content": "x", "thinking": "t"},
                                   {"role": "user", "content": "y"}], think=True),
]

CASES: list[Case] = LANG + CHAT + CAPS
