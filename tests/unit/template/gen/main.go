// Command gen renders the template test cases with Go's text/template, set up
// the way ollama sets it up, and prints the results as JSON.
//
//	go run ./tests/unit/template/gen tests/unit/template/vectors/cases.json > out.json
//
// Case kinds:
//
//	exec   template.New("").Option("missingkey=zero").Funcs(ollama funcs).Parse, Execute(data)
//	ollama the same after ollama's Parse touch-up (append {{ .Response }})
//	vars   ollama's Template.Vars (sorted, lower-cased identifiers)
//	caps   ollama's goTemplateCapabilities and thinking.InferTags
//	chat   ollama's Template.Execute(Values{Messages, Tools, Prompt, Suffix, Think...})
//
// JSON numbers in "data" decode as int when written without '.', 'e' or 'E' and
// as float64 otherwise, matching Python's json module. Messages and tools decode
// as ollama's API types do (numbers inside arguments and schemas are float64).
// currentDate and yesterdayDate use a fixed date so that outputs are stable.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

var fixedDate = time.Date(2025, time.June, 15, 12, 0, 0, 0, time.UTC)

// ---------------------------------------------------------------------------
// API types (a copy of the parts of ollama's api package the templates see)

type ImageData []byte

type ToolCallFunction struct {
	Index     int            `json:"index"`
	Name      string         `json:"name"`
	Arguments map[string]any `json:"arguments"`
}

type ToolCall struct {
	ID       string           `json:"id,omitempty"`
	Function ToolCallFunction `json:"function"`
}

type Message struct {
	Role       string      `json:"role"`
	Content    string      `json:"content"`
	Thinking   string      `json:"thinking,omitempty"`
	Images     []ImageData `json:"images,omitempty"`
	ToolCalls  []ToolCall  `json:"tool_calls,omitempty"`
	ToolName   string      `json:"tool_name,omitempty"`
	ToolCallID string      `json:"tool_call_id,omitempty"`
}

// UnmarshalJSON lower-cases the role, as ollama's api.Message does.
func (m *Message) UnmarshalJSON(b []byte) error {
	type alias Message
	var a alias
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	*m = Message(a)
	m.Role = strings.ToLower(m.Role)
	return nil
}

type PropertyType []string

func (pt *PropertyType) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*pt = []string{s}
		return nil
	}
	var a []string
	if err := json.Unmarshal(data, &a); err != nil {
		return err
	}
	*pt = a
	return nil
}

func (pt PropertyType) MarshalJSON() ([]byte, error) {
	if len(pt) == 1 {
		return json.Marshal(pt[0])
	}
	return json.Marshal([]string(pt))
}

func (pt PropertyType) String() string {
	switch len(pt) {
	case 0:
		return ""
	case 1:
		return pt[0]
	}
	return fmt.Sprintf("%v", []string(pt))
}

// PropMap is an insertion-ordered map of properties (ollama's ToolPropertiesMap).
type PropMap struct {
	keys []string
	vals map[string]ToolProperty
}

func (p *PropMap) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("properties: want an object")
	}
	p.keys = nil
	p.vals = map[string]ToolProperty{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := kt.(string)
		var v ToolProperty
		if err := dec.Decode(&v); err != nil {
			return err
		}
		if _, seen := p.vals[key]; !seen {
			p.keys = append(p.keys, key)
		}
		p.vals[key] = v
	}
	_, err = dec.Token()
	return err
}

func (p PropMap) MarshalJSON() ([]byte, error) {
	if p.vals == nil {
		return []byte("null"), nil
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range p.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		b.Write(kb)
		b.WriteByte(':')
		vb, err := json.Marshal(p.vals[k])
		if err != nil {
			return nil, err
		}
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func (p *PropMap) ToMap() map[string]ToolProperty {
	if p == nil || p.vals == nil {
		return nil
	}
	m := make(map[string]ToolProperty, len(p.vals))
	for k, v := range p.vals {
		m[k] = v
	}
	return m
}

type ToolProperty struct {
	AnyOf       []ToolProperty `json:"anyOf,omitempty"`
	Type        PropertyType   `json:"type,omitempty"`
	Items       any            `json:"items,omitempty"`
	Description string         `json:"description,omitempty"`
	Enum        []any          `json:"enum,omitempty"`
	Properties  *PropMap       `json:"properties,omitempty"`
	Required    []string       `json:"required,omitempty"`
}

func tsName(t string) string {
	switch t {
	case "string":
		return "string"
	case "number", "integer":
		return "number"
	case "boolean":
		return "boolean"
	case "array":
		return "any[]"
	case "object":
		return "Record<string, any>"
	case "null":
		return "null"
	}
	return "any"
}

func (tp ToolProperty) ToTypeScriptType() string {
	if len(tp.AnyOf) > 0 {
		var parts []string
		for _, a := range tp.AnyOf {
			parts = append(parts, a.ToTypeScriptType())
		}
		return strings.Join(parts, " | ")
	}
	if len(tp.Type) == 0 {
		return "any"
	}
	var parts []string
	for _, t := range tp.Type {
		parts = append(parts, tsName(t))
	}
	return strings.Join(parts, " | ")
}

type ToolFunctionParameters struct {
	Type       string   `json:"type"`
	Defs       any      `json:"$defs,omitempty"`
	Items      any      `json:"items,omitempty"`
	Required   []string `json:"required,omitempty"`
	Properties *PropMap `json:"properties"`
}

type ToolFunction struct {
	Name        string                 `json:"name"`
	Description string                 `json:"description,omitempty"`
	Parameters  ToolFunctionParameters `json:"parameters"`
}

type Tool struct {
	Type     string       `json:"type"`
	Items    any          `json:"items,omitempty"`
	Function ToolFunction `json:"function"`
}

// ---------------------------------------------------------------------------
// Template-side types (what ollama's template package hands to templates)

type templateTools []templateTool

func (t templateTools) String() string {
	b, _ := json.Marshal(t)
	return string(b)
}

type templateArgs map[string]any

func (t templateArgs) String() string {
	if t == nil {
		return "{}"
	}
	b, _ := json.Marshal(t)
	return string(b)
}

type templateProperties map[string]ToolProperty

func (t templateProperties) String() string {
	if t == nil {
		return "{}"
	}
	b, _ := json.Marshal(t)
	return string(b)
}

func (t templateTool) String() string {
	b, _ := json.Marshal(t)
	return string(b)
}

type templateTool struct {
	Type     string               `json:"type"`
	Items    any                  `json:"items,omitempty"`
	Function templateToolFunction `json:"function"`
}

type templateToolFunction struct {
	Name        string                         `json:"name"`
	Description string                         `json:"description"`
	Parameters  templateToolFunctionParameters `json:"parameters"`
}

type templateToolFunctionParameters struct {
	Type       string             `json:"type"`
	Defs       any                `json:"$defs,omitempty"`
	Items      any                `json:"items,omitempty"`
	Required   []string           `json:"required,omitempty"`
	Properties templateProperties `json:"properties"`
}

type templateToolCall struct {
	ID       string
	Function templateToolCallFunction
}

type templateToolCallFunction struct {
	Index     int
	Name      string
	Arguments templateArgs
}

type templateMessage struct {
	Role       string
	Content    string
	Thinking   string
	Images     []ImageData
	ToolCalls  []templateToolCall
	ToolName   string
	ToolCallID string
}

func convertTools(tools []Tool) templateTools {
	if tools == nil {
		return nil
	}
	out := make(templateTools, len(tools))
	for i, t := range tools {
		out[i] = templateTool{
			Type:  t.Type,
			Items: t.Items,
			Function: templateToolFunction{
				Name:        t.Function.Name,
				Description: t.Function.Description,
				Parameters: templateToolFunctionParameters{
					Type:       t.Function.Parameters.Type,
					Defs:       t.Function.Parameters.Defs,
					Items:      t.Function.Parameters.Items,
					Required:   t.Function.Parameters.Required,
					Properties: templateProperties(t.Function.Parameters.Properties.ToMap()),
				},
			},
		}
	}
	return out
}

func convertMessages(msgs []*Message) []*templateMessage {
	if msgs == nil {
		return nil
	}
	out := make([]*templateMessage, len(msgs))
	for i, m := range msgs {
		var calls []templateToolCall
		for _, tc := range m.ToolCalls {
			calls = append(calls, templateToolCall{
				ID: tc.ID,
				Function: templateToolCallFunction{
					Index:     tc.Function.Index,
					Name:      tc.Function.Name,
					Arguments: templateArgs(tc.Function.Arguments),
				},
			})
		}
		out[i] = &templateMessage{
			Role:       m.Role,
			Content:    m.Content,
			Thinking:   m.Thinking,
			Images:     m.Images,
			ToolCalls:  calls,
			ToolName:   m.ToolName,
			ToolCallID: m.ToolCallID,
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// ollama's template package, rewritten for this program

func funcMap() template.FuncMap {
	return template.FuncMap{
		"json": func(v any) string {
			b, _ := json.Marshal(v)
			return string(b)
		},
		"currentDate": func(args ...string) string {
			return fixedDate.Format("2006-01-02")
		},
		"yesterdayDate": func(args ...string) string {
			return fixedDate.AddDate(0, 0, -1).Format("2006-01-02")
		},
		"toTypeScriptType": func(v any) string {
			if p, ok := v.(ToolProperty); ok {
				return p.ToTypeScriptType()
			}
			if p, ok := v.(*ToolProperty); ok && p != nil {
				return p.ToTypeScriptType()
			}
			return "any"
		},
	}
}

func responseAction() *parse.ActionNode {
	return &parse.ActionNode{
		NodeType: parse.NodeAction,
		Pipe: &parse.PipeNode{
			NodeType: parse.NodePipe,
			Cmds: []*parse.CommandNode{{
				NodeType: parse.NodeCommand,
				Args:     []parse.Node{&parse.FieldNode{NodeType: parse.NodeField, Ident: []string{"Response"}}},
			}},
		},
	}
}

func identifiers(n parse.Node) ([]string, error) {
	var out []string
	switch n := n.(type) {
	case *parse.ListNode:
		for _, c := range n.Nodes {
			ids, err := identifiers(c)
			if err != nil {
				return out, err
			}
			out = append(out, ids...)
		}
	case *parse.TemplateNode:
		if n.Pipe == nil {
			return nil, fmt.Errorf("undefined template specified")
		}
		return identifiers(n.Pipe)
	case *parse.ActionNode:
		return identifiers(n.Pipe)
	case *parse.IfNode:
		return branchIdentifiers(&n.BranchNode)
	case *parse.RangeNode:
		return branchIdentifiers(&n.BranchNode)
	case *parse.WithNode:
		return branchIdentifiers(&n.BranchNode)
	case *parse.PipeNode:
		for _, c := range n.Cmds {
			for _, a := range c.Args {
				ids, err := identifiers(a)
				if err != nil {
					return out, err
				}
				out = append(out, ids...)
			}
		}
	case *parse.FieldNode:
		return n.Ident, nil
	case *parse.VariableNode:
		return n.Ident, nil
	}
	return out, nil
}

func branchIdentifiers(b *parse.BranchNode) ([]string, error) {
	out, err := identifiers(b.Pipe)
	if err != nil {
		return out, err
	}
	for _, l := range []*parse.ListNode{b.List, b.ElseList} {
		if l != nil {
			ids, err := identifiers(l)
			if err != nil {
				return out, err
			}
			out = append(out, ids...)
		}
	}
	return out, nil
}

func templateVars(t *template.Template) ([]string, error) {
	set := map[string]bool{}
	for _, tt := range t.Templates() {
		for _, n := range tt.Root.Nodes {
			ids, err := identifiers(n)
			if err != nil {
				return nil, err
			}
			for _, id := range ids {
				set[strings.ToLower(id)] = true
			}
		}
	}
	var out []string
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func ollamaParse(s string) (*template.Template, error) {
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcMap()).Parse(s)
	if err != nil {
		return nil, err
	}
	vars, err := templateVars(tmpl)
	if err != nil {
		return nil, err
	}
	if !has(vars, "messages") && !has(vars, "response") {
		tmpl.Tree.Root.Nodes = append(tmpl.Tree.Root.Nodes, responseAction())
	}
	return tmpl, nil
}

func collate(msgs []Message) (string, []*Message) {
	var system []string
	var collated []*Message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			collated[len(collated)-1].Content += "\n\n" + msgs[i].Content
		} else {
			collated = append(collated, &msgs[i])
		}
	}
	return strings.Join(system, "\n\n"), collated
}

// cutAfterResponse removes every node after the first .Response field, walking
// the tree the way ollama's deleteNode does.
func cutAfterResponse(n parse.Node) parse.Node {
	cut := false
	pred := func(n parse.Node) bool {
		if f, ok := n.(*parse.FieldNode); ok && has(f.Ident, "Response") {
			cut = true
			return false
		}
		return cut
	}
	var walk func(parse.Node) parse.Node
	walk = func(n parse.Node) parse.Node {
		if pred(n) {
			return nil
		}
		switch t := n.(type) {
		case *parse.ListNode:
			var nodes []parse.Node
			for _, c := range t.Nodes {
				if k := walk(c); k != nil {
					nodes = append(nodes, k)
				}
			}
			t.Nodes = nodes
			return t
		case *parse.IfNode:
			t.BranchNode = *(walk(&t.BranchNode).(*parse.BranchNode))
		case *parse.WithNode:
			t.BranchNode = *(walk(&t.BranchNode).(*parse.BranchNode))
		case *parse.RangeNode:
			t.BranchNode = *(walk(&t.BranchNode).(*parse.BranchNode))
		case *parse.BranchNode:
			t.List = walk(t.List).(*parse.ListNode)
			if t.ElseList != nil {
				t.ElseList = walk(t.ElseList).(*parse.ListNode)
			}
		case *parse.ActionNode:
			p := walk(t.Pipe)
			if p == nil {
				return nil
			}
			t.Pipe = p.(*parse.PipeNode)
		case *parse.PipeNode:
			var cmds []*parse.CommandNode
			for _, c := range t.Cmds {
				var args []parse.Node
				for _, a := range c.Args {
					if k := walk(a); k != nil {
						args = append(args, k)
					}
				}
				if len(args) == 0 {
					return nil
				}
				c.Args = args
				cmds = append(cmds, c)
			}
			if len(cmds) == 0 {
				return nil
			}
			t.Cmds = cmds
		}
		return n
	}
	return walk(n)
}

type values struct {
	Messages   []Message
	Tools      []Tool
	Prompt     string
	Suffix     string
	Think      bool
	ThinkLevel string
	IsThinkSet bool
}

func executeValues(tmpl *template.Template, w io.Writer, v values) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	system, msgs := collate(v.Messages)
	vars, err := templateVars(tmpl)
	if err != nil {
		return err
	}
	think := func(m map[string]any) map[string]any {
		m["Think"] = v.Think
		m["ThinkLevel"] = v.ThinkLevel
		m["IsThinkSet"] = v.IsThinkSet
		return m
	}
	if v.Prompt != "" && v.Suffix != "" {
		return tmpl.Execute(w, think(map[string]any{"Prompt": v.Prompt, "Suffix": v.Suffix, "Response": ""}))
	} else if has(vars, "messages") {
		return tmpl.Execute(w, think(map[string]any{
			"System":   system,
			"Messages": convertMessages(msgs),
			"Tools":    convertTools(v.Tools),
			"Response": "",
		}))
	}
	system = ""
	var b bytes.Buffer
	var prompt, response string
	run := func() error {
		err := tmpl.Execute(&b, think(map[string]any{"System": system, "Prompt": prompt, "Response": response}))
		system, prompt, response = "", "", ""
		return err
	}
	for _, m := range msgs {
		switch m.Role {
		case "system":
			if prompt != "" || response != "" {
				if err := run(); err != nil {
					return err
				}
			}
			system = m.Content
		case "user":
			if response != "" {
				if err := run(); err != nil {
					return err
				}
			}
			prompt = m.Content
		case "assistant":
			response = m.Content
		}
	}
	root := cutAfterResponse(tmpl.Tree.Root.Copy())
	tree := parse.Tree{Root: root.(*parse.ListNode)}
	last := template.Must(template.New("").AddParseTree("", &tree))
	if err := last.Execute(&b, think(map[string]any{"System": system, "Prompt": prompt, "Response": response})); err != nil {
		return err
	}
	_, err = io.Copy(w, &b)
	return err
}

// visit walks a parse tree the way ollama's thinking.templateVisit does.
func visit(n parse.Node, enter func(parse.Node) bool, exit func(parse.Node)) {
	if n == nil || !enter(n) {
		return
	}
	switch x := n.(type) {
	case *parse.ListNode:
		for _, c := range x.Nodes {
			visit(c, enter, exit)
		}
	case *parse.BranchNode:
		if x.Pipe != nil {
			visit(x.Pipe, enter, exit)
		}
		if x.List != nil {
			visit(x.List, enter, exit)
		}
		if x.ElseList != nil {
			visit(x.ElseList, enter, exit)
		}
	case *parse.ActionNode:
		visit(x.Pipe, enter, exit)
	case *parse.WithNode:
		visit(&x.BranchNode, enter, exit)
	case *parse.RangeNode:
		visit(&x.BranchNode, enter, exit)
	case *parse.IfNode:
		visit(&x.BranchNode, enter, exit)
	case *parse.TemplateNode:
		if x.Pipe != nil {
			visit(x.Pipe, enter, exit)
		}
	case *parse.PipeNode:
		for _, c := range x.Cmds {
			visit(c, enter, exit)
		}
	case *parse.CommandNode:
		for _, a := range x.Args {
			visit(a, enter, exit)
		}
	}
	if exit != nil {
		exit(n)
	}
}

func rangeUsesField(r *parse.RangeNode, field string) bool {
	found := false
	visit(r.BranchNode.Pipe, func(n parse.Node) bool {
		if f, ok := n.(*parse.FieldNode); ok && f.Ident[0] == field {
			found = true
		}
		return true
	}, nil)
	return found
}

// inferThinkingTags finds the text around .Thinking in a range over .Messages
// (ollama's thinking.InferTags heuristic).
func inferThinkingTags(t *template.Template) (string, string) {
	var ancestors []parse.Node
	opening, closing := "", ""
	enter := func(n parse.Node) bool {
		ancestors = append(ancestors, n)
		f, ok := n.(*parse.FieldNode)
		if !ok || len(f.Ident) == 0 || f.Ident[0] != "Thinking" {
			return true
		}
		var rng *parse.RangeNode
		for i := len(ancestors) - 1; i >= 0; i-- {
			if r, ok := ancestors[i].(*parse.RangeNode); ok {
				rng = r
				break
			}
		}
		if rng == nil || !rangeUsesField(rng, "Messages") {
			return true
		}
		for i := len(ancestors) - 1; i >= 0; i-- {
			if l, ok := ancestors[i].(*parse.ListNode); ok {
				if t, ok := l.Nodes[0].(*parse.TextNode); ok {
					opening = strings.TrimSpace(t.String())
				}
				if t, ok := l.Nodes[len(l.Nodes)-1].(*parse.TextNode); ok {
					closing = strings.TrimSpace(t.String())
				}
				break
			}
		}
		return true
	}
	exit := func(parse.Node) { ancestors = ancestors[:len(ancestors)-1] }
	visit(t.Root, enter, exit)
	return opening, closing
}

// capabilities is ollama's goTemplateCapabilities, plus the inferred tags.
func capabilities(t *template.Template) []string {
	out := []string{}
	vars, err := templateVars(t)
	if err != nil {
		return out
	}
	if has(vars, "tools") {
		out = append(out, "tools")
	}
	if has(vars, "suffix") {
		out = append(out, "insert")
	}
	open, close := inferThinkingTags(t)
	if open != "" && close != "" {
		out = append(out, "thinking")
	}
	return append(out, "open="+open, "close="+close)
}

// ---------------------------------------------------------------------------
// cases

type Case struct {
	Name       string          `json:"name"`
	Kind       string          `json:"kind,omitempty"`
	Template   string          `json:"template"`
	Data       json.RawMessage `json:"data,omitempty"`
	MissingKey string          `json:"missingkey,omitempty"`
	Messages   json.RawMessage `json:"messages,omitempty"`
	Tools      json.RawMessage `json:"tools,omitempty"`
	System     string          `json:"system,omitempty"`
	Prompt     string          `json:"prompt,omitempty"`
	Suffix     string          `json:"suffix,omitempty"`
	Think      json.RawMessage `json:"think,omitempty"`
}

type Result struct {
	Name   string   `json:"name"`
	Output string   `json:"output"`
	Error  *string  `json:"error"`
	Vars   []string `json:"vars,omitempty"`
}

func convertNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		s := string(x)
		if !strings.ContainsAny(s, ".eE") {
			if n, err := x.Int64(); err == nil {
				return int(n)
			}
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = convertNumbers(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = convertNumbers(e)
		}
		return x
	}
	return v
}

func decodeData(raw json.RawMessage) (any, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return convertNumbers(v), nil
}

func thinkValue(raw json.RawMessage) (bool, string, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return false, "", false
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err == nil {
		if b {
			return true, "medium", true
		}
		return false, "", true
	}
	var s string
	_ = json.Unmarshal(raw, &s)
	on := s == "high" || s == "medium" || s == "low" || s == "max"
	return on, s, true
}

// Go's type names in this program's package, as ollama's packages spell them.
var typeNames = strings.NewReplacer(
	"main.template", "template.template",
	"main.ImageData", "api.ImageData",
	"main.ToolProperty", "api.ToolProperty",
	"main.PropertyType", "api.PropertyType",
	"main.PropMap", "api.ToolPropertiesMap",
)

func run(c Case) (string, []string, error) {
	var b bytes.Buffer
	switch c.Kind {
	case "", "exec":
		mk := c.MissingKey
		if mk == "" {
			mk = "zero"
		}
		tmpl, err := template.New("").Option("missingkey=" + mk).Funcs(funcMap()).Parse(c.Template)
		if err != nil {
			return "", nil, err
		}
		data, err := decodeData(c.Data)
		if err != nil {
			return "", nil, err
		}
		err = tmpl.Execute(&b, data)
		return b.String(), nil, err
	case "ollama":
		tmpl, err := ollamaParse(c.Template)
		if err != nil {
			return "", nil, err
		}
		data, err := decodeData(c.Data)
		if err != nil {
			return "", nil, err
		}
		err = tmpl.Execute(&b, data)
		return b.String(), nil, err
	case "vars":
		tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcMap()).Parse(c.Template)
		if err != nil {
			return "", nil, err
		}
		vars, err := templateVars(tmpl)
		return "", vars, err
	case "caps":
		tmpl, err := ollamaParse(c.Template)
		if err != nil {
			return "", nil, err
		}
		return "", capabilities(tmpl), nil
	case "chat":
		tmpl, err := ollamaParse(c.Template)
		if err != nil {
			return "", nil, err
		}
		var v values
		if len(c.Messages) > 0 {
			if err := json.Unmarshal(c.Messages, &v.Messages); err != nil {
				return "", nil, err
			}
		}
		if len(c.Tools) > 0 && string(c.Tools) != "null" {
			if err := json.Unmarshal(c.Tools, &v.Tools); err != nil {
				return "", nil, err
			}
		}
		if c.System != "" && (len(v.Messages) == 0 || v.Messages[0].Role != "system") {
			v.Messages = append([]Message{{Role: "system", Content: c.System}}, v.Messages...)
		}
		v.Prompt, v.Suffix = c.Prompt, c.Suffix
		v.Think, v.ThinkLevel, v.IsThinkSet = thinkValue(c.Think)
		err = executeValues(tmpl, &b, v)
		return b.String(), nil, err
	}
	return "", nil, fmt.Errorf("unknown case kind %q", c.Kind)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gen CASES.json")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var cases []Case
	if err := json.Unmarshal(raw, &cases); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	results := make([]Result, 0, len(cases))
	for _, c := range cases {
		out, vars, err := run(c)
		r := Result{Name: c.Name, Output: typeNames.Replace(out), Vars: vars}
		if err != nil {
			msg := typeNames.Replace(err.Error())
			r.Error = &msg
			r.Output = ""
		}
		results = append(results, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
