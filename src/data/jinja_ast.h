// Internal to the Jinja interpreter (data/jinja.h): the syntax tree that jinja_parse.cpp builds
// and jinja.cpp renders.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace qlora::jinja {

struct Expr {
  enum Kind { Literal, Var, GetItem, Slice, GetAttr, Call, Filter, Test, Unary, Binary, Cond, List, Dict } kind;
  nlohmann::json value;                               // Literal
  std::string name;                         // Var / GetAttr / Call method / Filter / Test / operator
  std::vector<std::shared_ptr<Expr>> args;  // operands, call or filter arguments
  std::vector<std::string> keywords;        // Call: names of the last keywords.size() args (f(a, k=v))
  bool negate = false;                      // `is not`
};
using ExprPtr = std::shared_ptr<Expr>;

struct Node {
  enum Kind { Body, Text, Output, If, For, Set } kind;
  std::string text;                                            // Text
  ExprPtr expr;                                                // Output / For iterable / Set value
  std::vector<std::string> names;                              // For targets / Set target (x, or ns + attr)
  std::vector<std::pair<ExprPtr, std::shared_ptr<Node>>> branches;  // If (condition, body)
  std::vector<std::shared_ptr<Node>> children;                 // Body; For body = children[0]
  std::shared_ptr<Node> else_body;
};
using NodePtr = std::shared_ptr<Node>;

// Parses a template (trim_blocks and lstrip_blocks on, as transformers compiles chat templates);
// throws Error("[jinja] ...") naming an unsupported construct or a syntax error with its offset.
NodePtr parse_template(const std::string& source);

}  // namespace qlora::jinja
