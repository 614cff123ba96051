#pragma once
// A structural check of the pickle in a `torch.save` file (`<folder>/data.pkl`), run before LibTorch's
// unpickler sees it (io/state_dict.hpp). It executes nothing: it walks the opcodes with a model of the
// unpickler's stack and memo (values are kinds, strings and small integers, never objects) and refuses
//  * an opcode torch.save does not write, or one that runs past the end of the data (LibTorch 1.13 reserves a
//    string's length before reading it: a 4-byte length of 3 GB in a 1.5 KB file made it allocate 3 GB, found
//    by fuzzing), a pickle without STOP;
//  * a memo index out of sequence (LibTorch reserves 2 * index + 1 memo slots: LONG_BINPUT 0xFFFFFFFF would
//    reserve 128 GB);
//  * a tensor storage (BINPERSID ('storage', torch.<T>Storage, key, location, numel)) whose numel * itemsize
//    exceeds its record `<folder>/data/<key>`: LibTorch gives the storage the pickle's size over the record's
//    buffer, so later reads would run past it.
// No LibTorch needed; fuzzed through fuzz/target_state_dict.hpp.
#include <validflow/io/errors.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace validflow::io {

namespace detail {

struct PickleValue {
  enum class Kind { Str, Int, Global, Tuple, Other } kind = Kind::Other;
  std::string text;  ///< Str: the string; Global: "module name"
  int64_t number = 0;
  std::vector<std::shared_ptr<const PickleValue>> items;  ///< Tuple
};

/// Bytes per element of torch.<name> storages (the types torch.save writes); 0 for any other name.
inline int64_t storage_itemsize(const std::string& global) {
  static const std::map<std::string, int64_t> sizes = {
      {"torch FloatStorage", 4},    {"torch DoubleStorage", 8},       {"torch HalfStorage", 2},
      {"torch BFloat16Storage", 2}, {"torch LongStorage", 8},         {"torch IntStorage", 4},
      {"torch ShortStorage", 2},    {"torch CharStorage", 1},         {"torch ByteStorage", 1},
      {"torch BoolStorage", 1},     {"torch ComplexFloatStorage", 8}, {"torch ComplexDoubleStorage", 16}};
  const auto it = sizes.find(global);
  return it == sizes.end() ? 0 : it->second;
}

}  // namespace detail

/// Checks the pickle `p` of a torch.save file whose tensor records are `records` (name -> size, names as in
/// the zip: `<folder>/data/<key>`). Throws FileError naming `path`.
inline void check_torch_pickle(std::string_view p, const std::string& folder,
                               const std::map<std::string, uint64_t>& records, const std::string& path) {
  using Value = detail::PickleValue;
  using Ptr = std::shared_ptr<const Value>;
  constexpr size_t kMaxStack = 1u << 20;
  size_t i = 0;
  auto refuse = [&](const std::string& why) {
    return FileError(
        path, "'" + path + "' is not a valid torch.save file: its pickle " + why + " (byte " + std::to_string(i) + ")");
  };
  std::vector<Ptr> stack, memo;
  std::vector<size_t> marks;
  auto need = [&](size_t n) {
    if (p.size() - i < n) throw refuse("ends inside an opcode");
  };
  auto le = [&](size_t n) {  // an unsigned little-endian number of n bytes at i
    need(n);
    uint64_t v = 0;
    for (size_t k = n; k-- > 0;) v = v << 8 | static_cast<unsigned char>(p[i + k]);
    i += n;
    return v;
  };
  auto line = [&] {
    const auto end = p.find('\n', i);
    if (end == std::string_view::npos) throw refuse("ends inside a text argument");
    const std::string text(p.substr(i, end - i));
    i = end + 1;
    return text;
  };
  auto push = [&](Value v) {
    if (stack.size() >= kMaxStack) throw refuse("needs a stack deeper than " + std::to_string(kMaxStack));
    stack.push_back(std::make_shared<const Value>(std::move(v)));
  };
  auto push_ptr = [&](Ptr v) {
    if (stack.size() >= kMaxStack) throw refuse("needs a stack deeper than " + std::to_string(kMaxStack));
    stack.push_back(std::move(v));
  };
  auto pop = [&] {
    if (stack.empty() || (!marks.empty() && stack.size() <= marks.back())) throw refuse("pops an empty stack");
    auto v = stack.back();
    stack.pop_back();
    return v;
  };
  auto pop_to_mark = [&] {
    if (marks.empty()) throw refuse("uses a mark that was never set");
    std::vector<Ptr> items(stack.begin() + static_cast<std::ptrdiff_t>(marks.back()), stack.end());
    stack.resize(marks.back());
    marks.pop_back();
    return items;
  };
  auto text = [&](size_t length_bytes) {
    const uint64_t n = le(length_bytes);
    need(static_cast<size_t>(std::min<uint64_t>(n, p.size() + 1)));
    Value v{Value::Kind::Str, std::string(p.substr(i, static_cast<size_t>(n))), 0, {}};
    i += static_cast<size_t>(n);
    return v;
  };
  auto put = [&](uint64_t id) {
    if (stack.empty()) throw refuse("memoizes from an empty stack");
    if (id > memo.size()) throw refuse("uses memo index " + std::to_string(id) + " out of sequence");
    if (id == memo.size())
      memo.push_back(stack.back());
    else
      memo[static_cast<size_t>(id)] = stack.back();
  };
  auto get = [&](uint64_t id) {
    if (id >= memo.size()) throw refuse("reads memo index " + std::to_string(id) + " that was never set");
    push_ptr(memo[static_cast<size_t>(id)]);
  };
  auto whole = [&](const std::string& t) -> uint64_t {
    if (t.empty() || t.size() > 9 || t.find_first_not_of("0123456789") != std::string::npos)
      throw refuse("has a bad memo index '" + t.substr(0, 16) + "'");
    return std::stoull(t);
  };
  auto check_storage = [&](const Ptr& pid) {
    // ('storage', torch.<T>Storage, key, location, numel): the record must hold numel elements of T.
    using K = Value::Kind;
    const auto& t = pid->items;
    if (pid->kind != K::Tuple || t.size() != 5 || t[0]->kind != K::Str || t[0]->text != "storage" ||
        t[1]->kind != K::Global || t[2]->kind != K::Str || t[3]->kind != K::Str || t[4]->kind != K::Int)
      throw refuse("has a persistent id that is not ('storage', type, key, location, numel)");
    const int64_t itemsize = detail::storage_itemsize(t[1]->text);
    if (itemsize == 0) throw refuse("names an unknown storage type '" + t[1]->text + "'");
    const int64_t numel = t[4]->number;
    if (numel < 0) throw refuse("gives storage '" + t[2]->text + "' a negative size");
    if (numel == 0) return;  // LibTorch reads no record for an empty storage
    const auto record = records.find(folder + "data/" + t[2]->text);
    if (record == records.end()) throw refuse("names storage '" + t[2]->text + "' that the file does not hold");
    if (static_cast<uint64_t>(numel) > record->second / static_cast<uint64_t>(itemsize))
      throw refuse("gives storage '" + t[2]->text + "' " + std::to_string(numel) + " elements of " +
                   std::to_string(itemsize) + " bytes, its record has " + std::to_string(record->second) + " bytes");
  };

  while (i < p.size()) {
    const unsigned op = static_cast<unsigned char>(p[i++]);
    switch (op) {
      case 0x80:  // PROTO
        if (le(1) > 5) throw refuse("has an unknown protocol");
        break;
      case 0x95:  // FRAME
        (void)le(8);
        break;
      case '(':  // MARK
        marks.push_back(stack.size());
        break;
      case '.':  // STOP
        return;
      case '0':  // POP
        (void)pop();
        break;
      case '1':  // POP_MARK
        (void)pop_to_mark();
        break;
      case '2':  // DUP
        if (stack.empty()) throw refuse("duplicates an empty stack");
        push_ptr(stack.back());
        break;
      case 'N':
      case 0x88:
      case 0x89:  // NONE, NEWTRUE, NEWFALSE
      case '}':
      case ']':
      case 0x8f:  // EMPTY_DICT, EMPTY_LIST, EMPTY_SET
        push(Value{});
        break;
      case 'G':  // BINFLOAT
        (void)le(8);
        push(Value{});
        break;
      case 'K':  // BININT1
        push(Value{Value::Kind::Int, "", static_cast<int64_t>(le(1)), {}});
        break;
      case 'M':  // BININT2
        push(Value{Value::Kind::Int, "", static_cast<int64_t>(le(2)), {}});
        break;
      case 'J':  // BININT (signed 32 bits)
        push(Value{Value::Kind::Int, "", static_cast<int64_t>(static_cast<int32_t>(le(4))), {}});
        break;
      case 0x8a: {  // LONG1: at most 8 bytes (LibTorch's limit), two's complement
        const auto n = static_cast<size_t>(le(1));
        if (n > 8) throw refuse("has an integer longer than 8 bytes");
        uint64_t v = n ? le(n) : 0;
        if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign-extend
        push(Value{Value::Kind::Int, "", static_cast<int64_t>(v), {}});
        break;
      }
      case 'X':  // BINUNICODE
        push(text(4));
        break;
      case 0x8c:  // SHORT_BINUNICODE
        push(text(1));
        break;
      case 0x8d:  // BINUNICODE8
        push(text(8));
        break;
      case 'T':  // BINSTRING
        push(text(4));
        break;
      case 'U':  // SHORT_BINSTRING
        push(text(1));
        break;
      case 'B':  // BINBYTES
        (void)text(4);
        push(Value{});
        break;
      case 'C':  // SHORT_BINBYTES
        (void)text(1);
        push(Value{});
        break;
      case 0x8e:  // BINBYTES8
        (void)text(8);
        push(Value{});
        break;
      case 'c': {  // GLOBAL module\nname\n
        const auto module = line();
        const auto name = line();
        push(Value{Value::Kind::Global, module + " " + name, 0, {}});
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        const auto name = pop(), module = pop();
        if (name->kind != Value::Kind::Str || module->kind != Value::Kind::Str)
          throw refuse("has a STACK_GLOBAL without two strings");
        push(Value{Value::Kind::Global, module->text + " " + name->text, 0, {}});
        break;
      }
      case 'q':  // BINPUT
        put(le(1));
        break;
      case 'r':  // LONG_BINPUT
        put(le(4));
        break;
      case 'p':  // PUT
        put(whole(line()));
        break;
      case 0x94:  // MEMOIZE
        put(memo.size());
        break;
      case 'h':  // BINGET
        get(le(1));
        break;
      case 'j':  // LONG_BINGET
        get(le(4));
        break;
      case 'g':  // GET
        get(whole(line()));
        break;
      case ')':  // EMPTY_TUPLE
        push(Value{Value::Kind::Tuple, "", 0, {}});
        break;
      case 't':  // TUPLE
        push(Value{Value::Kind::Tuple, "", 0, pop_to_mark()});
        break;
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        std::vector<Ptr> items(op - 0x84);
        for (size_t k = items.size(); k-- > 0;) items[k] = pop();
        push(Value{Value::Kind::Tuple, "", 0, std::move(items)});
        break;
      }
      case 'd':
      case 'l':  // DICT, LIST
        (void)pop_to_mark();
        push(Value{});
        break;
      case 's':  // SETITEM: key, value onto the dict below them
        (void)pop();
        (void)pop();
        if (stack.empty()) throw refuse("sets an item without a dict");
        break;
      case 'u':   // SETITEMS
      case 'e':   // APPENDS
      case 0x90:  // ADDITEMS
        (void)pop_to_mark();
        if (stack.empty()) throw refuse("adds items without a container");
        break;
      case 'a':  // APPEND
        (void)pop();
        if (stack.empty()) throw refuse("appends without a list");
        break;
      case 'R':   // REDUCE: callable, args -> object
      case 0x81:  // NEWOBJ: class, args -> object
        (void)pop();
        (void)pop();
        push(Value{});
        break;
      case 'b':  // BUILD: object, state -> object
        (void)pop();
        if (stack.empty()) throw refuse("builds without an object");
        break;
      case 'Q':  // BINPERSID
        check_storage(pop());
        push(Value{});
        break;
      default: {
        static const char* hex = "0123456789abcdef";
        throw refuse(std::string("has opcode 0x") + hex[op >> 4] + hex[op & 15] + ", which torch.save does not write");
      }
    }
  }
  throw refuse("ends without STOP");
}

}  // namespace validflow::io
