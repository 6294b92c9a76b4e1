// The docs' module tables follow the registries: every built-in attention module has a row
// in docs/attention.md's table and every head one in docs/heads.md's, so a module cannot
// ship undocumented.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>

#include "softlab/attention.hpp"
#include "softlab/head.hpp"

using namespace softlab;

namespace {

std::string read_doc(const std::string& name) {
  std::ifstream in(std::string(SOFTLAB_SOURCE_DIR) + "/docs/" + name);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

template <class Registry>
void expect_table_rows(const Registry& registry, const std::string& doc) {
  const std::string text = read_doc(doc);
  ASSERT_FALSE(text.empty()) << "docs/" << doc << " is missing";
  for (const auto& e : registry.entries()) {
    if (!e.builtin) continue;
    EXPECT_NE(text.find("\n| `" + e.name + "`"), std::string::npos)
        << registry.kind() << " '" << e.name << "' has no row in docs/" << doc << "'s table";
  }
}

TEST(DocsFollowRegistry, EveryBuiltinAttentionModuleHasATableRow) {
  expect_table_rows(attention_registry(), "attention.md");
}

TEST(DocsFollowRegistry, EveryBuiltinHeadHasATableRow) { expect_table_rows(head_registry(), "heads.md"); }

}  // namespace
