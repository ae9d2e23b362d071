// Jinja2-subset renderer for chat templates: a tree-walking evaluator over nlohmann::json values
// (the parser is jinja_parse.cpp). Undefined is json's `discarded` value, so `is defined` and
// printing an undefined ("") work as in Jinja2; values print as Python would (True, None, lists).
#include "data/jinja.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "data/jinja_ast.h"

namespace qlora {
namespace jinja {

using json = nlohmann::json;

namespace {

json undefined() { return json(json::value_t::discarded); }
bool is_undefined(const json& v) { return v.is_discarded(); }

// ---- values ----
bool truthy(const json& v) {
  if (is_undefined(v) || v.is_null()) return false;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number_integer()) return v.get<int64_t>() != 0;
  if (v.is_number()) return v.get<double>() != 0.0;
  if (v.is_string()) return !v.get_ref<const std::string&>().empty();
  return !v.empty();
}

std::string repr(const json& v);
std::string to_str(const json& v) {
  if (is_undefined(v)) return "";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "None";
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) {
    const double d = v.get<double>();
    if (std::floor(d) == d && std::fabs(d) < 1e16) return fmt::format("{:.1f}", d);
    return fmt::format("{}", d);
  }
  return repr(v);
}
std::string repr(const json& v) {  // Python's repr for lists and dicts of simple values
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    return (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? "\"" + s + "\"" : "'" + s + "'";
  }
  if (v.is_array()) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + repr(v[i]);
    return out + "]";
  }
  if (v.is_object()) {
    std::string out = "{";
    bool first = true;
    for (auto it = v.begin(); it != v.end(); ++it, first = false)
      out += (first ? "" : ", ") + repr(json(it.key())) + ": " + repr(it.value());
    return out + "}";
  }
  return to_str(v);
}

std::string type_name(const json& v) {
  if (is_undefined(v)) return "undefined";
  return v.is_number_integer() ? "int" : v.is_number() ? "float" : v.type_name();
}

bool equal(const json& a, const json& b) {
  if (is_undefined(a) || is_undefined(b)) return is_undefined(a) && is_undefined(b);
  if (a.is_number() && b.is_number()) return a.get<double>() == b.get<double>();
  if (a.is_boolean() != b.is_boolean() && (a.is_number() || b.is_number())) {  // Python: True == 1
    const double x = a.is_boolean() ? double(a.get<bool>()) : a.get<double>();
    const double y = b.is_boolean() ? double(b.get<bool>()) : b.get<double>();
    return x == y;
  }
  return a == b;
}

int64_t normalize_index(int64_t i, size_t n) { return i < 0 ? i + int64_t(n) : i; }

std::string strip_chars(const std::string& s, const std::string& chars, bool left, bool right) {
  size_t b = 0, e = s.size();
  if (left) while (b < e && chars.find(s[b]) != std::string::npos) ++b;
  if (right) while (e > b && chars.find(s[e - 1]) != std::string::npos) --e;
  return s.substr(b, e - b);
}
const std::string kWhitespace = " \t\n\r\f\v";

// A template is code from a model file: bound its work so a runaway loop (`range(10**12)`,
// nested loops, a string doubled in a loop) fails with an Error instead of hanging or taking all
// memory. Real chat templates take a few dozen steps per message and output a few hundred KB at
// most; 2^18 steps and 16 MiB per value leave room for conversations of thousands of turns. (At
// 2^20 a fuzzed `{% for i in range(820000) %}` rendered for 0.5 s, 15 s under ASan; a range
// longer than the steps left now fails before it is built.)
constexpr uint64_t kMaxSteps = uint64_t(1) << 18;  // render() and eval() calls, loop iterations
constexpr size_t kMaxValueBytes = size_t(1) << 24;  // any string built, list built, or the output

class Renderer {
 public:
  explicit Renderer(const json& context) { scopes_.push_back(context); }

  void render(const Node& n, std::string& out) {
    step();
    switch (n.kind) {
      case Node::Body:
        for (const auto& c : n.children) render(*c, out);
        break;
      case Node::Text:
        out += n.text;
        check_size(out.size(), "the output");
        break;
      case Node::Output:
        out += to_str(eval(*n.expr));
        check_size(out.size(), "the output");
        break;
      case Node::If:
        for (const auto& [cond, body] : n.branches) {
          if (truthy(eval(*cond))) {
            render(*body, out);
            return;
          }
        }
        if (n.else_body) render(*n.else_body, out);
        break;
      case Node::Set:
        if (n.names.size() == 2) set_attribute(n.names[0], n.names[1], eval(*n.expr));
        else scopes_.back()[n.names[0]] = eval(*n.expr);
        break;
      case Node::For: render_for(n, out); break;
    }
  }

 private:
  void step() {
    if (++steps_ > kMaxSteps)
      fail("jinja", "the template took more than {} steps; a runaway loop? (chat templates need far fewer)", kMaxSteps);
  }
  static void check_size(size_t n, const char* what) {
    if (n > kMaxValueBytes) fail("jinja", "{} grew past {} bytes (elements); a runaway template?", what, kMaxValueBytes);
  }
  static json checked(std::string s) {
    check_size(s.size(), "a string");
    return json(std::move(s));
  }
  [[noreturn]] static void overflow(const std::string& op, int64_t p, int64_t q) {
    fail("jinja", "integer overflow in {} {} {}; Jinja's integers are unbounded, ours are int64", p, op, q);
  }

  void render_for(const Node& n, std::string& out) {
    json seq = eval(*n.expr);
    json items = json::array();
    if (seq.is_array()) items = seq;
    else if (seq.is_object()) for (auto it = seq.begin(); it != seq.end(); ++it) items.push_back(it.key());
    else if (seq.is_string()) for (char c : seq.get<std::string>()) items.push_back(std::string(1, c));
    else if (!is_undefined(seq) && !seq.is_null()) fail("jinja", "cannot iterate over a value of type {}", type_name(seq));
    const size_t count = items.size();
    for (size_t i = 0; i < count; ++i) {
      json scope = json::object();
      scope["loop"] = {{"index0", i},           {"index", i + 1},          {"first", i == 0},
                       {"last", i + 1 == count}, {"length", count},         {"revindex", count - i},
                       {"revindex0", count - i - 1}};
      if (n.names.size() == 1) {
        scope[n.names[0]] = items[i];
      } else {
        if (!items[i].is_array() || items[i].size() != n.names.size())
          fail("jinja", "cannot unpack a {} into {} loop variables", type_name(items[i]), n.names.size());
        for (size_t k = 0; k < n.names.size(); ++k) scope[n.names[k]] = items[i][k];
      }
      scopes_.push_back(std::move(scope));
      render(*n.children[0], out);
      scopes_.pop_back();
    }
    if (count == 0 && n.else_body) render(*n.else_body, out);
  }

  // {% set ns.attr = value %}: changes the namespace where it lives (the scope that defined it), so
  // a loop body can update a value seen after the loop, which a plain set (loop-local) cannot.
  // Jinja allows it on namespace() objects only; any dict is accepted here.
  void set_attribute(const std::string& name, const std::string& attr, json value) {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = it->find(name);
      if (f == it->end()) continue;
      if (!f->is_object()) fail("jinja", "cannot set attribute '{}' of '{}', a {} (namespace() makes one)", attr, name, type_name(*f));
      (*f)[attr] = std::move(value);
      return;
    }
    fail("jinja", "cannot set attribute '{}' of undefined '{}' (namespace() makes one)", attr, name);
  }

  json lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return *f;
    }
    return undefined();
  }

  json get_item(const json& obj, const json& key) {
    if (obj.is_object() && key.is_string()) {
      auto f = obj.find(key.get<std::string>());
      return f == obj.end() ? undefined() : *f;
    }
    if ((obj.is_array() || obj.is_string()) && key.is_number_integer()) {
      const size_t n = obj.is_array() ? obj.size() : obj.get_ref<const std::string&>().size();
      const int64_t i = normalize_index(key.get<int64_t>(), n);
      if (i < 0 || i >= int64_t(n)) return undefined();
      return obj.is_array() ? obj[size_t(i)] : json(std::string(1, obj.get_ref<const std::string&>()[size_t(i)]));
    }
    if (is_undefined(obj)) fail("jinja", "cannot index an undefined value with {}", repr(key));
    return undefined();
  }

  json eval(const Expr& e) {
    step();
    switch (e.kind) {
      case Expr::Literal: return e.value;
      case Expr::Var: return lookup(e.name);
      case Expr::List: {
        json l = json::array();
        for (const auto& a : e.args) l.push_back(eval(*a));
        return l;
      }
      case Expr::Dict: {
        json d = json::object();
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) d[to_str(eval(*e.args[i]))] = eval(*e.args[i + 1]);
        return d;
      }
      case Expr::GetItem: return get_item(eval(*e.args[0]), eval(*e.args[1]));
      case Expr::GetAttr: {
        const json obj = eval(*e.args[0]);
        if (is_undefined(obj)) fail("jinja", "cannot read attribute '{}' of an undefined value", e.name);
        return get_item(obj, json(e.name));
      }
      case Expr::Slice: return slice(eval(*e.args[0]), e.args[1], e.args[2], e.args[3]);
      case Expr::Call: return call(e);
      case Expr::Filter: return filter(e);
      case Expr::Test: return test(e) != e.negate;
      case Expr::Unary: {
        const json v = eval(*e.args[0]);
        if (e.name == "not") return !truthy(v);
        if (!v.is_number()) fail("jinja", "unary '{}' needs a number, got {}", e.name, type_name(v));
        if (e.name == "+") return v;
        if (v.is_number_integer() && v.get<int64_t>() == std::numeric_limits<int64_t>::min()) overflow("-", 0, v.get<int64_t>());
        return v.is_number_integer() ? json(-v.get<int64_t>()) : json(-v.get<double>());
      }
      case Expr::Cond:
        if (truthy(eval(*e.args[0]))) return eval(*e.args[1]);
        return e.args[2] ? eval(*e.args[2]) : undefined();
      case Expr::Binary: return binary(e);
    }
    return undefined();
  }

  // Python's seq[lo:hi:step] (strings by bytes): bounds clamped, defaults by the step's sign.
  json slice(const json& obj, const ExprPtr& lo_e, const ExprPtr& hi_e, const ExprPtr& step_e) {
    const bool is_str = obj.is_string();
    if (!obj.is_array() && !is_str) fail("jinja", "cannot slice a value of type {}", type_name(obj));
    const int64_t n = int64_t(is_str ? obj.get_ref<const std::string&>().size() : obj.size());
    auto integer = [&](const ExprPtr& x, const char* what) {
      const json v = eval(*x);
      if (!v.is_number_integer()) fail("jinja", "slice {} must be an integer, got {}", what, type_name(v));
      return v.get<int64_t>();
    };
    const int64_t step = step_e ? integer(step_e, "step") : 1;
    if (step == 0) fail("jinja", "slice step cannot be zero");
    if (step == std::numeric_limits<int64_t>::min()) fail("jinja", "slice step out of range");
    // Forward: indices in [0, n]; backward: in [-1, n - 1] (-1: before the first element).
    const int64_t min = step > 0 ? 0 : -1, max = step > 0 ? n : n - 1;
    auto bound = [&](const ExprPtr& x, int64_t dflt) {
      if (!x) return dflt;
      const int64_t v = integer(x, "bounds");
      return std::clamp(v < 0 ? v + n : v, min, max);
    };
    const int64_t lo = bound(lo_e, step > 0 ? 0 : n - 1), hi = bound(hi_e, step > 0 ? n : -1);
    std::string s;
    json out = json::array();
    for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) {
      if (is_str) s += obj.get_ref<const std::string&>()[size_t(i)];
      else out.push_back(obj[size_t(i)]);
      if ((step > 0 && i > max - step) || (step < 0 && i < min - step)) break;  // the next i would overflow
    }
    if (is_str) return s;
    return out;
  }

  json binary(const Expr& e) {
    const std::string& op = e.name;
    if (op == "and") {
      json a = eval(*e.args[0]);
      return truthy(a) ? eval(*e.args[1]) : a;
    }
    if (op == "or") {
      json a = eval(*e.args[0]);
      return truthy(a) ? a : eval(*e.args[1]);
    }
    const json a = eval(*e.args[0]), b = eval(*e.args[1]);
    if (op == "==") return equal(a, b);
    if (op == "!=") return !equal(a, b);
    if (op == "~") return checked(to_str(a) + to_str(b));
    if (op == "in" || op == "not in") {
      bool found = false;
      if (b.is_string() && a.is_string()) found = b.get<std::string>().find(a.get<std::string>()) != std::string::npos;
      else if (b.is_array()) found = std::any_of(b.begin(), b.end(), [&](const json& x) { return equal(x, a); });
      else if (b.is_object() && a.is_string()) found = b.contains(a.get<std::string>());
      else if (!is_undefined(b) && !b.is_null()) fail("jinja", "'in' needs a string, list or dict on the right, got {}", type_name(b));
      return op == "in" ? found : !found;
    }
    if (op == "+" && a.is_string() && b.is_string()) return checked(a.get<std::string>() + b.get<std::string>());
    if (op == "+" && a.is_array() && b.is_array()) {
      check_size(a.size() + b.size(), "a list");
      json out = a;
      for (const auto& x : b) out.push_back(x);
      return out;
    }
    if ((op == "<" || op == ">" || op == "<=" || op == ">=") && a.is_string() && b.is_string()) {
      const int c = a.get<std::string>().compare(b.get<std::string>());
      return op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0;
    }
    if (!a.is_number() || !b.is_number())
      fail("jinja", "unsupported operand types for '{}': {} and {}", op, type_name(a), type_name(b));
    const bool ints = a.is_number_integer() && b.is_number_integer();
    const double x = a.get<double>(), y = b.get<double>();
    if (op == "<") return x < y;
    if (op == ">") return x > y;
    if (op == "<=") return x <= y;
    if (op == ">=") return x >= y;
    if (op == "/") {
      if (y == 0) fail("jinja", "division by zero");
      return x / y;
    }
    if (ints) {
      const int64_t p = a.get<int64_t>(), q = b.get<int64_t>();
      int64_t r = 0;
      if (op == "+" || op == "-" || op == "*") {
        const bool wrapped = op == "+"   ? __builtin_add_overflow(p, q, &r)
                             : op == "-" ? __builtin_sub_overflow(p, q, &r)
                                         : __builtin_mul_overflow(p, q, &r);
        if (wrapped) overflow(op, p, q);
        return r;
      }
      if (q == 0) fail("jinja", "integer division or modulo by zero");
      if (q == -1) return op == "//" ? json(-p) : json(int64_t(0));  // INT64_MIN / -1 would trap
      const int64_t fl = p / q - ((p % q != 0) && ((p < 0) != (q < 0)));  // Python floors
      if (op == "//") return fl;
      if (op == "%") return p - fl * q;
    } else {
      if (op == "+") return x + y;
      if (op == "-") return x - y;
      if (op == "*") return x * y;
      if (op == "//") return std::floor(x / y);
      if (op == "%") return x - std::floor(x / y) * y;
    }
    fail("jinja", "unsupported operator '{}'", op);
  }

  json call(const Expr& e) {
    std::vector<json> args;
    for (size_t i = 1; i < e.args.size(); ++i) args.push_back(eval(*e.args[i]));
    const Expr& callee = *e.args[0];
    const size_t positional = args.size() - e.keywords.size();
    if (callee.kind == Expr::Var && callee.name == "namespace") {  // namespace(a=1, b=x): a mutable dict
      if (positional != 0) fail("jinja", "namespace() takes keyword arguments only");
      json ns = json::object();
      for (size_t k = 0; k < e.keywords.size(); ++k) ns[e.keywords[k]] = args[positional + k];
      return ns;
    }
    if (!e.keywords.empty())
      fail("jinja", "keyword arguments ('{}=') are only supported for namespace()", e.keywords[0]);
    if (callee.kind == Expr::Var) {
      if (callee.name == "raise_exception")
        fail("jinja", "template raised: {}", args.empty() ? std::string() : to_str(args[0]));
      if (callee.name == "range") {
        if (args.empty() || args.size() > 2 || !args[0].is_number_integer()) fail("jinja", "range() takes 1 or 2 integers");
        if (args.size() == 2 && !args[1].is_number_integer()) fail("jinja", "range() takes 1 or 2 integers");
        const int64_t lo = args.size() == 2 ? args[0].get<int64_t>() : 0;
        const int64_t hi = args.size() == 2 ? args[1].get<int64_t>() : args[0].get<int64_t>();
        // hi - lo in unsigned arithmetic: the signed difference may overflow.
        if (hi > lo) check_size(size_t(uint64_t(hi) - uint64_t(lo)), "range()");
        // A range longer than the steps left cannot be looped over: fail before building it
        // (building 820000 elements took 15 s under ASan).
        if (hi > lo && uint64_t(hi) - uint64_t(lo) > kMaxSteps - std::min(steps_, kMaxSteps))
          fail("jinja", "range() of {} elements is more than the template's {} steps allow", uint64_t(hi) - uint64_t(lo),
               kMaxSteps);
        json out = json::array();
        for (int64_t i = lo; i < hi; ++i) out.push_back(i);
        return out;
      }
      fail("jinja", "unsupported function '{}()'", callee.name);
    }
    if (callee.kind != Expr::GetAttr) fail("jinja", "only functions and methods can be called");
    const json obj = eval(*callee.args[0]);
    const std::string& m = callee.name;
    auto arg_str = [&](size_t i) {
      if (i >= args.size() || !args[i].is_string()) fail("jinja", "{}() needs a string argument {}", m, i + 1);
      return args[i].get<std::string>();
    };
    if (obj.is_string()) {
      const std::string& s = obj.get_ref<const std::string&>();
      if (m == "strip" || m == "lstrip" || m == "rstrip") {
        const std::string chars = args.empty() || args[0].is_null() ? kWhitespace : arg_str(0);
        return strip_chars(s, chars, m != "rstrip", m != "lstrip");
      }
      if (m == "upper" || m == "lower") {
        std::string r = s;
        for (auto& c : r) c = char(m == "upper" ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
        return r;
      }
      if (m == "startswith") return s.rfind(arg_str(0), 0) == 0;
      if (m == "endswith") {
        const std::string suffix = arg_str(0);
        return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
      }
      if (m == "replace") {
        const std::string from = arg_str(0), to = arg_str(1);
        if (from.empty()) fail("jinja", "replace() with an empty pattern is not supported");
        std::string r;
        size_t p = 0, f;
        while ((f = s.find(from, p)) != std::string::npos) {
          r += s.substr(p, f - p) + to, p = f + from.size();
          check_size(r.size(), "a string");
        }
        return checked(r + s.substr(p));
      }
      if (m == "split") {
        json out = json::array();
        if (args.empty()) {  // Python: split on runs of whitespace
          size_t p = 0;
          while ((p = s.find_first_not_of(kWhitespace, p)) != std::string::npos) {
            const size_t q = std::min(s.find_first_of(kWhitespace, p), s.size());
            out.push_back(s.substr(p, q - p));
            p = q;
          }
          return out;
        }
        const std::string sep = arg_str(0);
        if (sep.empty()) fail("jinja", "split() with an empty separator");
        size_t p = 0, f;
        while ((f = s.find(sep, p)) != std::string::npos) out.push_back(s.substr(p, f - p)), p = f + sep.size();
        out.push_back(s.substr(p));
        return out;
      }
    } else if (obj.is_object()) {
      if (m == "items" || m == "keys" || m == "values") {
        json out = json::array();
        for (auto it = obj.begin(); it != obj.end(); ++it)
          out.push_back(m == "items" ? json::array({it.key(), it.value()}) : m == "keys" ? json(it.key()) : it.value());
        return out;
      }
      if (m == "get") {
        auto f = obj.find(arg_str(0));
        if (f != obj.end()) return *f;
        return args.size() > 1 ? args[1] : json(nullptr);
      }
    }
    fail("jinja", "unsupported method '{}()' on a value of type {}", m, type_name(obj));
  }

  json filter(const Expr& e) {
    const json v = eval(*e.args[0]);
    std::vector<json> args;
    for (size_t i = 1; i < e.args.size(); ++i) args.push_back(eval(*e.args[i]));
    const std::string& f = e.name;
    if (f == "trim") return strip_chars(to_str(v), kWhitespace, true, true);
    if (f == "length" || f == "count") {
      if (v.is_string()) return int64_t(v.get_ref<const std::string&>().size());  // bytes; chat templates count lists
      if (v.is_array() || v.is_object()) return int64_t(v.size());
      fail("jinja", "filter 'length' needs a string, list or dict, got {}", type_name(v));
    }
    if (f == "upper" || f == "lower" || f == "capitalize") {
      std::string r = to_str(v);
      for (size_t i = 0; i < r.size(); ++i) {
        const auto c = static_cast<unsigned char>(r[i]);
        r[i] = char((f == "upper" || (f == "capitalize" && i == 0)) ? std::toupper(c) : std::tolower(c));
      }
      return r;
    }
    if (f == "first" || f == "last") {
      if (!v.is_array() || v.empty()) return undefined();
      return f == "first" ? v.front() : v.back();
    }
    if (f == "string") return to_str(v);
    if (f == "int") {
      if (v.is_number_integer()) return v;
      if (v.is_number()) {
        // Casting a double outside int64 is undefined behaviour; Python's int() has no limit.
        const double d = v.get<double>();
        if (!(d >= -0x1p63 && d < 0x1p63)) fail("jinja", "filter 'int': {} does not fit int64", d);
        return int64_t(d);
      }
      try {
        return int64_t(std::stoll(to_str(v)));
      } catch (...) {
        return int64_t(0);
      }
    }
    if (f == "join") {
      if (!v.is_array()) fail("jinja", "filter 'join' needs a list, got {}", type_name(v));
      const std::string sep = args.empty() ? "" : to_str(args[0]);
      std::string r;
      for (size_t i = 0; i < v.size(); ++i) {
        r += (i ? sep : "") + to_str(v[i]);
        check_size(r.size(), "a string");
      }
      return r;
    }
    if (f == "default" || f == "d") {
      const bool boolean = args.size() > 1 && truthy(args[1]);
      if (is_undefined(v) || (boolean && !truthy(v))) return args.empty() ? json("") : args[0];
      return v;
    }
    fail("jinja", "unsupported filter '{}'", f);
  }

  bool test(const Expr& e) {
    const json v = eval(*e.args[0]);
    const std::string& t = e.name;
    if (t == "defined") return !is_undefined(v);
    if (t == "undefined") return is_undefined(v);
    if (t == "none") return v.is_null();
    if (t == "string") return v.is_string();
    if (t == "number") return v.is_number();
    if (t == "integer") return v.is_number_integer();
    if (t == "boolean") return v.is_boolean();
    if (t == "mapping") return v.is_object();
    if (t == "sequence" || t == "iterable") return v.is_array() || v.is_string() || v.is_object();
    if (t == "true") return v.is_boolean() && v.get<bool>();
    if (t == "false") return v.is_boolean() && !v.get<bool>();
    if (t == "even" || t == "odd") {
      if (!v.is_number_integer()) fail("jinja", "test '{}' needs an integer, got {}", t, type_name(v));
      return (v.get<int64_t>() % 2 == 0) == (t == "even");
    }
    fail("jinja", "unsupported test 'is {}'", t);
  }

  std::vector<json> scopes_;
  uint64_t steps_ = 0;
};

}  // namespace
}  // namespace jinja

JinjaTemplate::JinjaTemplate(const std::string& source)
    : root_(jinja::parse_template(source)) {}
JinjaTemplate::~JinjaTemplate() = default;
JinjaTemplate::JinjaTemplate(const JinjaTemplate&) = default;
JinjaTemplate& JinjaTemplate::operator=(const JinjaTemplate&) = default;
JinjaTemplate::JinjaTemplate(JinjaTemplate&&) noexcept = default;
JinjaTemplate& JinjaTemplate::operator=(JinjaTemplate&&) noexcept = default;

std::string JinjaTemplate::render(const nlohmann::json& context) const {
  if (!context.is_object()) fail("jinja", "the render context must be an object, got {}", context.type_name());
  jinja::Renderer renderer(context);
  std::string out;
  renderer.render(*root_, out);
  return out;
}

}  // namespace qlora
