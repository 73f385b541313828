package transform

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/optimizer"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"
)

// exprCompiler compiles the expressions of one spec against one source table.
type exprCompiler struct {
	source  map[string]int // source column name → index
	options []expr.Option
}

func newExprCompiler(source []Column, sourceTypes []pgType, funcs map[string]Func) *exprCompiler {
	c := &exprCompiler{source: make(map[string]int, len(source))}
	env := types.Map{}
	for i, col := range source {
		c.source[col.Name] = i
		env[col.Name] = sourceTypes[i].envType()
	}
	env[catStack] = types.TypeOf(&concatStack{})
	c.options = append(c.options, expr.Env(env))
	for name, f := range funcs {
		c.options = append(c.options, expr.Function(name, f.Fn, f.Types...))
	}
	return c
}

// compiledExpr is one expression, ready to run against the environment.
type compiledExpr struct {
	program *vm.Program
	typ     reflect.Type // static result type; an interface type when only run time knows
	reads   []int        // source columns the expression reads
	usesNow bool
}

// compile does what expr.Compile does, with one step added between type
// checking and code generation: rewrite, which needs the checked types and
// must not change the static type the destination check sees.
func (c *exprCompiler) compile(input string, asBool bool) (compiledExpr, error) {
	cfg := conf.CreateNew()
	for _, op := range c.options {
		op(cfg)
	}
	for name := range cfg.Disabled {
		delete(cfg.Builtins, name)
	}
	cfg.Check()
	if asBool {
		cfg.Expect, cfg.ExpectAny = reflect.Bool, true
	}

	tree, err := checker.ParseCheck(input, cfg)
	if err != nil {
		return compiledExpr{}, err
	}
	out := compiledExpr{typ: tree.Node.Type()}
	if err := c.scan(tree.Node, &out); err != nil {
		return compiledExpr{}, err
	}
	if rewrite(&tree.Node) {
		if _, err := checker.Check(tree, cfg); err != nil {
			return compiledExpr{}, fmt.Errorf("internal error after rewriting the expression: %w", err)
		}
	}
	if cfg.Optimize {
		if err := optimizer.Optimize(&tree.Node, cfg); err != nil {
			return compiledExpr{}, err
		}
	}
	out.program, err = compiler.Compile(tree, cfg)
	return out, err
}

// scan records which source columns the expression reads and whether it
// calls now(), and refuses the names reserved for rewritten expressions.
func (c *exprCompiler) scan(root ast.Node, out *compiledExpr) error {
	var err error
	seen := make(map[int]bool)
	read := func(i int) {
		if !seen[i] {
			seen[i] = true
			out.reads = append(out.reads, i)
		}
	}
	ast.Walk(&root, visitor(func(n *ast.Node) {
		switch n := (*n).(type) {
		case *ast.IdentifierNode:
			switch i, ok := c.source[n.Value]; {
			case n.Value == "$env":
				for _, i := range c.source {
					read(i)
				}
			case ok:
				read(i)
			case strings.HasPrefix(n.Value, "$"):
				err = fmt.Errorf("%s is reserved", n.Value)
			}
		case *ast.CallNode:
			if id, ok := n.Callee.(*ast.IdentifierNode); ok && id.Value == "now" {
				out.usesNow = true
			}
		case *ast.MemberNode:
			// t.Local() would make the output depend on the machine.
			if p, ok := n.Property.(*ast.StringNode); ok && p.Value == "Local" && n.Node.Type() == timeType {
				err = errors.New("Local() depends on the machine's time zone; name one with In(timezone(...))")
			}
		case *ast.BuiltinNode:
			if n.Name == "timezone" || n.Name == "date" {
				for _, a := range n.Arguments {
					if s, ok := a.(*ast.StringNode); ok && s.Value == "Local" {
						err = errors.New(`the "Local" time zone depends on the machine; name one`)
					}
				}
			}
		}
	}))
	return err
}

type visitor func(*ast.Node)

func (v visitor) Visit(n *ast.Node) { v(n) }

// exprError is an expression that failed, at Compile or on one row.
type exprError struct {
	expr string
	err  error
}

// Error is one line: expr's own message spans three, with a caret under the
// expression.
func (e *exprError) Error() string {
	var fe *file.Error
	switch {
	case !errors.As(e.err, &fe):
		return fmt.Sprintf("expression %q: %v", e.expr, e.err)
	case fe.Snippet == "":
		return fmt.Sprintf("expression %q: %s", e.expr, fe.Message)
	}
	return fmt.Sprintf("expression %q: %s (at character %d)", e.expr, fe.Message, fe.Column+1)
}

func (e *exprError) Unwrap() error { return e.err }

// state is what one Apply call needs for itself: Compile's programs are
// shared, the VM and the environment are not.
type state struct {
	vm  vm.VM
	env map[string]any
	cat concatStack
}

func newState(inputs int) *state {
	s := &state{env: make(map[string]any, inputs+1)}
	s.env[catStack] = &s.cat
	return s
}

func (s *state) run(p *vm.Program) (any, error) {
	s.cat.depth = 0 // a failed row may have left a concatenation open
	return s.vm.Run(p, s.env)
}

// Every value that passes through expr's VM is an interface, so an
// expression like first_name + " " + last_name allocates and boxes the
// intermediate first_name + " " on every row, and lower(email) boxes a new
// copy of an email that was lower case already. rewrite replaces those
// shapes with calls to the functions below, whose signatures are among
// expr's typed fast paths (no argument slice), so that a row allocates
// little more than the values it writes.
//
// The functions are constants of the program; only the concatenation
// buffers are per call, found in the environment under catStack. The
// environment holds nothing else but the source columns read, so that for
// up to 7 of them it stays a small map, read without hashing. Expressions
// cannot name catStack: scan refuses identifiers that start with "$".
const catStack = "$cat"

// rewrite turns every chain a + b + c of three or more strings into
// end(add(add(begin($cat, a), b), c)), and trim(s), lower(s) and upper(s)
// into calls that return their argument itself when it does not change. It
// reports whether it changed anything.
func rewrite(root *ast.Node) bool {
	changed := false
	inner := make(map[ast.Node]bool) // chain links that are not the chain's top
	ast.Walk(root, visitor(func(n *ast.Node) {
		if b, ok := concatNode(*n); ok {
			for _, side := range []ast.Node{b.Left, b.Right} {
				if _, ok := concatNode(side); ok {
					inner[side] = true
				}
			}
		}
	}))
	ast.Walk(root, visitor(func(n *ast.Node) {
		if _, ok := concatNode(*n); !ok || inner[*n] {
			return
		}
		ops := concatOperands(*n, nil)
		if len(ops) < 3 {
			return
		}
		chain := call(concatBegin, &ast.IdentifierNode{Value: catStack}, ops[0])
		for _, op := range ops[1:] {
			chain = call(concatAdd, chain, op)
		}
		ast.Patch(n, call(concatEnd, chain))
		changed = true
	}))
	ast.Walk(root, visitor(func(n *ast.Node) {
		b, ok := (*n).(*ast.BuiltinNode)
		if !ok || len(b.Arguments) != 1 {
			return
		}
		var fn func(any) any
		switch b.Name {
		case "trim":
			fn = trimKeep
		case "lower":
			fn = lowerKeep
		case "upper":
			fn = upperKeep
		default:
			return
		}
		ast.Patch(n, call(fn, b.Arguments[0]))
		changed = true
	}))
	return changed
}

var stringType = reflect.TypeFor[string]()

func concatNode(n ast.Node) (*ast.BinaryNode, bool) {
	b, ok := n.(*ast.BinaryNode)
	return b, ok && b.Operator == "+" && b.Left.Type() == stringType && b.Right.Type() == stringType
}

func concatOperands(n ast.Node, ops []ast.Node) []ast.Node {
	if b, ok := concatNode(n); ok {
		return concatOperands(b.Right, concatOperands(b.Left, ops))
	}
	return append(ops, n)
}

// call builds a call of fn located at its last argument, where a run-time
// error points.
func call(fn any, args ...ast.Node) ast.Node {
	c := &ast.CallNode{Callee: &ast.ConstantNode{Value: fn}, Arguments: args}
	c.SetLocation(args[len(args)-1].Location())
	c.Callee.SetLocation(c.Location())
	return c
}

// concatStack builds concatenations in reused buffers. Chains nest (an
// operand may itself contain a chain, finished before the outer one goes on),
// so the buffers form a stack. concatBegin, concatAdd and concatEnd have the
// signatures they have because func(any, any) any and func(any) string are
// among expr's typed fast paths.
type concatStack struct {
	frames []*concatFrame
	depth  int
}

type concatFrame struct {
	buf   []byte
	stack *concatStack
}

func concatBegin(stack, x any) any {
	c := stack.(*concatStack)
	if c.depth == len(c.frames) {
		c.frames = append(c.frames, &concatFrame{stack: c})
	}
	f := c.frames[c.depth]
	c.depth++
	f.buf = append(f.buf[:0], concatOperand(x)...)
	return f
}

func concatAdd(f, x any) any {
	frame := f.(*concatFrame)
	frame.buf = append(frame.buf, concatOperand(x)...)
	return f
}

func concatEnd(f any) string {
	frame := f.(*concatFrame)
	frame.stack.depth--
	return string(frame.buf)
}

func concatOperand(x any) string {
	s, ok := x.(string)
	if !ok {
		panic(fmt.Sprintf("invalid operation: cannot concatenate %T (a NULL? use ?? or coalesce)", x))
	}
	return s
}

func trimKeep(v any) any {
	s := v.(string)
	if t := strings.TrimSpace(s); len(t) != len(s) {
		return t
	}
	return v
}

func lowerKeep(v any) any {
	s := v.(string)
	if l := strings.ToLower(s); l != s {
		return l
	}
	return v
}

func upperKeep(v any) any {
	s := v.(string)
	if u := strings.ToUpper(s); u != s {
		return u
	}
	return v
}
