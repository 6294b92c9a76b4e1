// Parsing user-written JSON with the checks nlohmann leaves out: a bound on nesting, repeated
// keys, and errors that say which key they are about (json_text.hpp).
#include "config/json_text.hpp"

#include <algorithm>
#include <memory>
#include <unordered_set>
#include <vector>

#include "softlab/error.hpp"

namespace softlab::config_detail {

namespace {

// nlohmann reports a byte offset; people read files by line and column.
std::pair<size_t, size_t> line_column(const std::string& text, size_t byte) {
  const size_t at = std::min(byte == 0 ? 0 : byte - 1, text.size());  // 0-based index of the bad character
  const size_t line = 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n'));
  const size_t line_start = at == 0 ? 0 : text.rfind('\n', at - 1);
  const size_t column = line_start == std::string::npos || at == 0 ? at + 1 : at - line_start;
  return {line, column};
}

// "[json.exception.parse_error.101] parse error at line 1, column 2: syntax error ... - why"
// -> "syntax error ... - why": our own prefix names the file, line and column. nlohmann quotes
// the last token read, which can be a megabyte of digits or bytes that are not UTF-8, so the
// reason is cut to an excerpt.
std::string parse_reason(const std::string& what) {
  const auto p = what.find("parse error");
  const auto colon = p == std::string::npos ? std::string::npos : what.find(": ", p);
  return text_excerpt(colon == std::string::npos ? what : what.substr(colon + 2), 160);
}

// "[json.exception.out_of_range.406] number overflow parsing '1e999'" -> "number overflow
// parsing '1e999'".
std::string exception_reason(const std::string& what) {
  const auto close = what.find("] ");
  return text_excerpt(close == std::string::npos ? what : what.substr(close + 2), 160);
}

// Where the parser is, as a dotted path ("train.optimizer.lr", "x[1].b"), kept up to date by
// the parse callback so that errors thrown by nlohmann itself can be placed too.
struct Position {
  struct Frame {
    bool object;
    std::unordered_set<std::string> keys;
    std::string key;
    size_t elements = 0;  // arrays: elements started so far
  };
  std::vector<Frame> frames;

  // `pending`: the innermost array's next element has not been counted yet (nlohmann failed
  // while reading it), so it is at index `elements` rather than `elements - 1`.
  std::string path(bool pending = false) const {
    std::string out;
    for (size_t i = 0; i < frames.size(); ++i) {
      const Frame& f = frames[i];
      const size_t index = f.elements - (pending && i + 1 == frames.size() ? 0 : 1);
      out += f.object ? (out.empty() ? "" : ".") + f.key : detail::cat("[", index, "]");
    }
    // Keys can be of any length; the message needs to point, not to quote.
    return out.empty() ? std::string("the top level") : text_excerpt(out, 160);
  }
};

// The callback that keeps `pos` current and refuses too deep a nesting and repeated keys (JSON
// would silently keep the last value of a repeated key: for a config that is a typo-shaped bug).
json::parser_callback_t checking_callback(const std::shared_ptr<Position>& pos, const std::string& where) {
  return [pos, where](int, json::parse_event_t event, json& parsed) {
    auto& st = pos->frames;
    auto element = [&] {
      if (!st.empty() && !st.back().object) ++st.back().elements;
    };
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        element();
        if (st.size() >= static_cast<size_t>(kMaxJsonDepth))
          throw Error(detail::cat(where, ": ", pos->path(), ": objects and arrays nested more than ", kMaxJsonDepth,
                                  " levels deep (a config needs a handful)"));
        st.push_back({event == json::parse_event_t::object_start, {}, {}, 0});
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!st.empty()) st.pop_back();
        break;
      case json::parse_event_t::value: element(); break;
      case json::parse_event_t::key: {
        Position::Frame& f = st.back();
        f.key = parsed.get<std::string>();
        if (!f.keys.insert(f.key).second)
          throw Error(detail::cat(where, ": duplicate key '", pos->path(), "' (JSON keeps only the last value)"));
        break;
      }
    }
    return true;
  };
}

}  // namespace

json parse_json_document(const std::string& text, const std::string& file) {
  const auto pos = std::make_shared<Position>();
  try {
    return json::parse(text, checking_callback(pos, file));
  } catch (const json::parse_error& e) {
    const auto [line, column] = line_column(text, e.byte);
    throw Error(detail::cat(file, ":", line, ":", column, ": JSON syntax error: ", parse_reason(e.what())));
  } catch (const json::exception& e) {
    // The one other failure of nlohmann's parser: a number beyond a double (out_of_range 406).
    throw Error(detail::cat(file, ": ", pos->path(true), ": ", exception_reason(e.what()),
                            " (a JSON number must fit a double, below about 1.8e308)"));
  }
}

std::optional<json> parse_json_value(const std::string& text, const std::string& path) {
  const auto pos = std::make_shared<Position>();
  json j = json::parse(text, checking_callback(pos, path), /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

}  // namespace softlab::config_detail
