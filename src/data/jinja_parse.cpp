// Jinja2-subset parser for chat templates: the template lexer (tags, comments and whitespace
// control: '-' markers, trim_blocks, lstrip_blocks) and a recursive-descent parser with Jinja2's
// precedence: or < and < not < compare < + - < ~ < * / // % < unary < postfix, then filters and
// tests. Tested through tests/data/test_chat_template.cpp.
#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "core/error.h"
#include "data/jinja_ast.h"

namespace qlora {
namespace jinja {

using json = nlohmann::json;

namespace {

// The parser, the renderer and the tree's destructor all recurse, over nested expressions and
// nested blocks; a template of a million '(' or '{% if %}'s would overflow the stack. Bounding the
// tokens of one tag bounds every expression tree's depth (and so the evaluator's recursion); the
// block depth is bounded on its own. Real chat templates stay far below both (under 200 tokens
// in a tag, blocks nested a handful deep).
constexpr size_t kMaxTagTokens = 1024;
constexpr int kMaxBlockDepth = 64;

// ---- expression tokens ----
enum class Tok { Name, String, Int, Float, Op, End };
struct Token {
  Tok kind;
  std::string text;
};

std::vector<Token> lex_expr(const std::string& s, size_t where) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Tok::Name, s.substr(i, j - i)});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      bool is_float = false;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '.')) {
        if (s[j] == '.') {
          if (j + 1 >= s.size() || !std::isdigit(static_cast<unsigned char>(s[j + 1]))) break;
          is_float = true;
        }
        ++j;
      }
      out.push_back({is_float ? Tok::Float : Tok::Int, s.substr(i, j - i)});
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string value;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] == '\\' && j + 1 < s.size()) {
          const char e = s[++j];
          switch (e) {
            case 'n': value += '\n'; break;
            case 't': value += '\t'; break;
            case 'r': value += '\r'; break;
            default: value += e;  // \\ \' \" and unknown escapes keep the character
          }
        } else {
          value += s[j];
        }
      }
      if (j >= s.size()) fail("jinja", "unterminated string literal in the tag at offset {}", where);
      out.push_back({Tok::String, value});
      i = j + 1;
    } else {
      static const char* kOps[] = {"==", "!=", "<=", ">=", "//", "**", "+", "-", "*", "/", "%", "~", "(", ")",
                                   "[",  "]",  ",",  ":",  ".",  "|",  "<", ">", "=", "{", "}"};
      bool found = false;
      for (const char* op : kOps) {
        const size_t n = std::char_traits<char>::length(op);
        if (s.compare(i, n, op) == 0) {
          out.push_back({Tok::Op, op});
          i += n;
          found = true;
          break;
        }
      }
      if (!found) fail("jinja", "unexpected character '{}' in the tag at offset {}", c, where);
    }
  }
  if (out.size() > kMaxTagTokens)
    fail("jinja", "the tag at offset {} has more than {} tokens; split the expression", where, kMaxTagTokens);
  out.push_back({Tok::End, ""});
  return out;
}


ExprPtr make(Expr::Kind kind) {
  auto e = std::make_shared<Expr>();
  e->kind = kind;
  return e;
}

class ExprParser {
 public:
  ExprParser(std::vector<Token> tokens, size_t where) : t_(std::move(tokens)), where_(where) {}

  ExprPtr parse_expression() { return parse_cond(); }
  bool at_end() const { return peek().kind == Tok::End; }
  const Token& peek(size_t k = 0) const { return t_[std::min(pos_ + k, t_.size() - 1)]; }
  bool is_name(const char* n, size_t k = 0) const { return peek(k).kind == Tok::Name && peek(k).text == n; }
  bool is_op(const char* o) const { return peek().kind == Tok::Op && peek().text == o; }
  Token next() { return t_[std::min(pos_++, t_.size() - 1)]; }
  void expect_op(const char* o) {
    if (!is_op(o)) fail("jinja", "expected '{}' in the tag at offset {}, got '{}'", o, where_, peek().text);
    ++pos_;
  }
  std::string expect_name() {
    if (peek().kind != Tok::Name) fail("jinja", "expected a name in the tag at offset {}, got '{}'", where_, peek().text);
    return next().text;
  }
  void expect_end() {
    if (!at_end()) fail("jinja", "unexpected '{}' in the tag at offset {}", peek().text, where_);
  }

 private:
  ExprPtr binary(const std::string& op, ExprPtr a, ExprPtr b) {
    auto e = make(Expr::Binary);
    e->name = op;
    e->args = {std::move(a), std::move(b)};
    return e;
  }
  ExprPtr parse_cond() {
    ExprPtr e = parse_or();
    if (is_name("if")) {
      ++pos_;
      auto c = make(Expr::Cond);
      ExprPtr cond = parse_or();
      ExprPtr other = nullptr;
      if (is_name("else")) {
        ++pos_;
        other = parse_cond();
      }
      c->args = {cond, e, other};
      return c;
    }
    return e;
  }
  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (is_name("or")) {
      ++pos_;
      e = binary("or", e, parse_and());
    }
    return e;
  }
  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (is_name("and")) {
      ++pos_;
      e = binary("and", e, parse_not());
    }
    return e;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      ++pos_;
      auto e = make(Expr::Unary);
      e->name = "not";
      e->args = {parse_not()};
      return e;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    ExprPtr e = parse_add();
    for (;;) {
      if (peek().kind == Tok::Op &&
          (is_op("==") || is_op("!=") || is_op("<") || is_op(">") || is_op("<=") || is_op(">="))) {
        const std::string op = next().text;
        e = binary(op, e, parse_add());
      } else if (is_name("in")) {
        ++pos_;
        e = binary("in", e, parse_add());
      } else if (is_name("not") && is_name("in", 1)) {
        pos_ += 2;
        e = binary("not in", e, parse_add());
      } else {
        return e;
      }
    }
  }
  ExprPtr parse_add() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      const std::string op = next().text;
      e = binary(op, e, parse_concat());
    }
    return e;
  }
  ExprPtr parse_concat() {
    ExprPtr e = parse_mul();
    while (is_op("~")) {
      ++pos_;
      e = binary("~", e, parse_mul());
    }
    return e;
  }
  ExprPtr parse_mul() {
    ExprPtr e = parse_unary();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = next().text;
      e = binary(op, e, parse_unary());
    }
    return e;
  }
  ExprPtr parse_unary() {
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      e = make(Expr::Unary);
      e->name = next().text;
      e->args = {parse_unary()};
    } else {
      e = parse_postfix(parse_primary());
    }
    return parse_filters(e);
  }
  // After '(': positional arguments, then keyword arguments (their names in `keywords`, when
  // given; a filter takes none).
  std::vector<ExprPtr> parse_call_args(std::vector<std::string>* keywords = nullptr) {
    std::vector<ExprPtr> args;
    while (!is_op(")")) {
      if (peek().kind == Tok::Name && peek(1).kind == Tok::Op && peek(1).text == "=") {
        if (!keywords) fail("jinja", "keyword arguments ('{}=') are not supported here (tag at offset {})", peek().text, where_);
        keywords->push_back(next().text);
        ++pos_;  // '='
      } else if (keywords && !keywords->empty()) {
        fail("jinja", "a positional argument after a keyword argument (tag at offset {})", where_);
      }
      args.push_back(parse_expression());
      if (!is_op(",")) break;
      ++pos_;
    }
    expect_op(")");
    return args;
  }
  ExprPtr parse_filters(ExprPtr e) {
    for (;;) {
      if (is_op("|")) {
        ++pos_;
        auto f = make(Expr::Filter);
        f->name = expect_name();
        f->args = {e};
        if (is_op("(")) {
          ++pos_;
          for (auto& a : parse_call_args()) f->args.push_back(a);
        }
        e = f;
      } else if (is_name("is")) {
        ++pos_;
        auto t = make(Expr::Test);
        if (is_name("not")) {
          ++pos_;
          t->negate = true;
        }
        t->name = expect_name();
        t->args = {e};
        e = t;
      } else {
        return e;
      }
    }
  }
  ExprPtr parse_postfix(ExprPtr e) {
    for (;;) {
      if (is_op(".")) {
        ++pos_;
        auto a = make(Expr::GetAttr);
        a->name = expect_name();
        a->args = {e};
        e = a;
      } else if (is_op("[")) {
        ++pos_;
        ExprPtr lo, hi, step;
        if (!is_op(":")) lo = parse_expression();
        if (is_op(":")) {
          ++pos_;
          if (!is_op("]") && !is_op(":")) hi = parse_expression();
          if (is_op(":")) {
            ++pos_;
            if (!is_op("]")) step = parse_expression();
          }
          auto s = make(Expr::Slice);
          s->args = {e, lo, hi, step};
          e = s;
        } else {
          auto g = make(Expr::GetItem);
          g->args = {e, lo};
          e = g;
        }
        expect_op("]");
      } else if (is_op("(")) {
        ++pos_;
        auto c = make(Expr::Call);
        c->args = {e};
        for (auto& a : parse_call_args(&c->keywords)) c->args.push_back(a);
        e = c;
      } else {
        return e;
      }
    }
  }
  ExprPtr parse_primary() {
    const Token tok = next();
    auto lit = [](json v) {
      auto e = make(Expr::Literal);
      e->value = std::move(v);
      return e;
    };
    switch (tok.kind) {
      case Tok::String: {
        std::string s = tok.text;
        while (peek().kind == Tok::String) s += next().text;  // adjacent literals concatenate
        return lit(s);
      }
      case Tok::Int:
      case Tok::Float:
        try {
          return tok.kind == Tok::Int ? lit(std::stoll(tok.text)) : lit(std::stod(tok.text));
        } catch (const std::out_of_range&) {
          fail("jinja", "number {} out of range in the tag at offset {}", tok.text, where_);
        }
      case Tok::Name: {
        if (tok.text == "true" || tok.text == "True") return lit(true);
        if (tok.text == "false" || tok.text == "False") return lit(false);
        if (tok.text == "none" || tok.text == "None") return lit(nullptr);
        auto v = make(Expr::Var);
        v->name = tok.text;
        return v;
      }
      case Tok::Op:
        if (tok.text == "(") {
          ExprPtr e = parse_expression();
          if (is_op(",")) fail("jinja", "tuples are not supported (tag at offset {})", where_);
          expect_op(")");
          return e;
        }
        if (tok.text == "[") {
          auto l = make(Expr::List);
          while (!is_op("]")) {
            l->args.push_back(parse_expression());
            if (!is_op(",")) break;
            ++pos_;
          }
          expect_op("]");
          return l;
        }
        if (tok.text == "{") {
          auto d = make(Expr::Dict);
          while (!is_op("}")) {
            d->args.push_back(parse_expression());
            expect_op(":");
            d->args.push_back(parse_expression());
            if (!is_op(",")) break;
            ++pos_;
          }
          expect_op("}");
          return d;
        }
        break;
      case Tok::End: fail("jinja", "unexpected end of the tag at offset {}", where_);
    }
    fail("jinja", "unexpected '{}' in the tag at offset {}", tok.text, where_);
  }

  std::vector<Token> t_;
  size_t pos_ = 0;
  size_t where_;
};

// ---- template lexer: text, {{ }}, {% %}, with trim_blocks / lstrip_blocks / '-' control ----
struct Piece {
  enum Kind { Text, Expr, Stmt } kind;
  std::string content;
  size_t where;
};

std::vector<Piece> lex_template(const std::string& src) {
  std::vector<Piece> pieces;
  std::string text;
  size_t i = 0;
  bool run_at_line_start = true;  // the current text run began at a line start (Jinja2's lstrip rule)
  auto flush = [&] {
    if (!text.empty()) pieces.push_back({Piece::Text, text, 0});
    text.clear();
  };
  while (i < src.size()) {
    const size_t open = src.find('{', i);
    const bool tag = open != std::string::npos && open + 1 < src.size() &&
                     (src[open + 1] == '{' || src[open + 1] == '%' || src[open + 1] == '#');
    const size_t stop = tag ? open : (open == std::string::npos ? src.size() : open + 1);
    text += src.substr(i, stop - i);
    i = stop;
    if (!tag) continue;
    const char kind = src[open + 1];
    const char close = kind == '{' ? '}' : kind;
    size_t body = open + 2;
    bool strip_before = false, keep_before = false;
    if (body < src.size() && src[body] == '-') strip_before = true, ++body;
    else if (body < src.size() && src[body] == '+') keep_before = true, ++body;
    size_t end = body;
    if (kind == '#') {
      end = src.find("#}", body);
    } else {  // the closing delimiter outside string literals
      char quote = 0;
      for (; end + 1 < src.size(); ++end) {
        const char c = src[end];
        if (quote) {
          if (c == '\\') ++end;
          else if (c == quote) quote = 0;
        } else if (c == '\'' || c == '"') {
          quote = c;
        } else if (c == close && src[end + 1] == '}') {
          break;
        }
      }
      if (end + 1 >= src.size()) end = std::string::npos;
    }
    if (end == std::string::npos) fail("jinja", "unclosed tag '{{{}' at offset {}", kind, open);
    bool strip_after = false;
    size_t content_end = end;
    if (content_end > body && src[content_end - 1] == '-') strip_after = true, --content_end;
    // Whitespace before the tag: '-' strips all of it; lstrip_blocks strips spaces and tabs
    // between the line start and a block tag or comment.
    if (strip_before) {
      const size_t keep = text.find_last_not_of(" \t\r\n\f\v");
      text.erase(keep == std::string::npos ? 0 : keep + 1);
    } else if (kind != '{' && !keep_before) {
      const size_t nl = text.find_last_of('\n');
      const size_t line_start = nl == std::string::npos ? 0 : nl + 1;
      if ((nl != std::string::npos || run_at_line_start) &&
          text.find_first_not_of(" \t", line_start) == std::string::npos)
        text.erase(line_start);
    }
    flush();
    if (kind == '{') pieces.push_back({Piece::Expr, src.substr(body, content_end - body), open});
    else if (kind == '%') pieces.push_back({Piece::Stmt, src.substr(body, content_end - body), open});
    i = end + 2;
    // Whitespace after the tag: '-' strips all of it; trim_blocks drops one newline after a block
    // tag or comment.
    if (strip_after) {
      while (i < src.size() && std::isspace(static_cast<unsigned char>(src[i]))) ++i;
    } else if (kind != '{') {
      if (src.compare(i, 2, "\r\n") == 0) i += 2;
      else if (i < src.size() && src[i] == '\n') ++i;
    }
    run_at_line_start = i == 0 || src[i - 1] == '\n';
  }
  flush();
  return pieces;
}

// ---- statement parser ----
class TemplateParser {
 public:
  explicit TemplateParser(std::vector<Piece> pieces) : p_(std::move(pieces)) {}

  NodePtr parse() {
    std::string stop;
    return parse_body({}, stop);
  }

 private:
  // Parses until one of `stops` ({% endif %}, {% else %}...); returns its keyword in `stop`, and
  // leaves the rest of that tag in `stop_parser_`.
  NodePtr parse_body(const std::vector<std::string>& stops, std::string& stop) {
    if (++depth_ > kMaxBlockDepth)
      fail("jinja", "blocks nested deeper than {} (at offset {})", kMaxBlockDepth, pos_ < p_.size() ? p_[pos_].where : 0);
    struct Leave {
      int& d;
      ~Leave() { --d; }
    } leave{depth_};
    auto body = std::make_shared<Node>();
    body->kind = Node::Body;
    while (pos_ < p_.size()) {
      const Piece& piece = p_[pos_++];
      if (piece.kind == Piece::Text) {
        auto n = std::make_shared<Node>();
        n->kind = Node::Text;
        n->text = piece.content;
        body->children.push_back(n);
        continue;
      }
      ExprParser ep(lex_expr(piece.content, piece.where), piece.where);
      if (piece.kind == Piece::Expr) {
        auto n = std::make_shared<Node>();
        n->kind = Node::Output;
        n->expr = ep.parse_expression();
        ep.expect_end();
        body->children.push_back(n);
        continue;
      }
      const std::string keyword = ep.expect_name();
      if (std::find(stops.begin(), stops.end(), keyword) != stops.end()) {
        stop = keyword;
        stop_parser_ = std::make_unique<ExprParser>(std::move(ep));
        return body;
      }
      if (keyword == "if") {
        body->children.push_back(parse_if(ep));
      } else if (keyword == "for") {
        body->children.push_back(parse_for(ep, piece.where));
      } else if (keyword == "generation") {
        // TRL's training templates mark assistant output with {% generation %}...{% endgeneration %}
        // (transformers' return_assistant_tokens_mask); it renders its body unchanged.
        ep.expect_end();
        std::string end;
        body->children.push_back(parse_body({"endgeneration"}, end));
        stop_parser_->expect_end();
      } else if (keyword == "set") {
        auto n = std::make_shared<Node>();
        n->kind = Node::Set;
        n->names.push_back(ep.expect_name());
        if (ep.is_op(".")) {  // {% set ns.attr = value %}
          ep.expect_op(".");
          n->names.push_back(ep.expect_name());
        }
        if (!ep.is_op("=")) fail("jinja", "block assignment ('{{% set {} %}}...{{% endset %}}') is not supported (offset {})", n->names[0], piece.where);
        ep.expect_op("=");
        n->expr = ep.parse_expression();
        ep.expect_end();
        body->children.push_back(n);
      } else {
        fail("jinja", "unsupported tag '{{% {} %}}' at offset {}{}", keyword, piece.where,
             stops.empty() ? "" : fmt::format(" (expected one of: {})", fmt::join(stops, ", ")));
      }
    }
    if (!stops.empty()) fail("jinja", "missing '{{% {} %}}' at the end of the template", stops.back());
    return body;
  }

  NodePtr parse_if(ExprParser& ep) {
    auto n = std::make_shared<Node>();
    n->kind = Node::If;
    ExprPtr cond = ep.parse_expression();
    ep.expect_end();
    for (;;) {
      std::string stop;
      NodePtr body = parse_body({"elif", "else", "endif"}, stop);
      n->branches.emplace_back(cond, body);
      ExprParser& sp = *stop_parser_;
      if (stop == "elif") {
        cond = sp.parse_expression();
        sp.expect_end();
        continue;
      }
      sp.expect_end();
      if (stop == "else") {
        std::string end;
        n->else_body = parse_body({"endif"}, end);
        stop_parser_->expect_end();
      }
      return n;
    }
  }

  NodePtr parse_for(ExprParser& ep, size_t where) {
    auto n = std::make_shared<Node>();
    n->kind = Node::For;
    n->names.push_back(ep.expect_name());
    while (ep.is_op(",")) {
      ep.next();
      n->names.push_back(ep.expect_name());
    }
    if (!ep.is_name("in")) fail("jinja", "expected 'in' in the for tag at offset {}", where);
    ep.next();
    n->expr = ep.parse_expression();
    if (ep.is_name("recursive")) fail("jinja", "recursive for loops are not supported (offset {})", where);
    ep.expect_end();
    std::string stop;
    n->children.push_back(parse_body({"else", "endfor"}, stop));
    stop_parser_->expect_end();
    if (stop == "else") {
      std::string end;
      n->else_body = parse_body({"endfor"}, end);
      stop_parser_->expect_end();
    }
    return n;
  }

  std::vector<Piece> p_;
  size_t pos_ = 0;
  int depth_ = 0;  // parse_body nesting
  std::unique_ptr<ExprParser> stop_parser_;
};

}  // namespace

NodePtr parse_template(const std::string& source) { return TemplateParser(lex_template(source)).parse(); }

}  // namespace jinja
}  // namespace qlora
