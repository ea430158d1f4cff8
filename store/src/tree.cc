#include "hookfs/tree.h"

#include <algorithm>

#include "coding.h"

namespace hookfs {

namespace {
std::string Printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s.substr(0, 80)) {
    if (c < 0x20 || c == 0x7f) {
      char b[8];
      snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else {
      out += char(c);
    }
  }
  return out;
}
}  // namespace

const TreeEntry* Tree::Find(std::string_view name) const {
  auto it = std::lower_bound(entries.begin(), entries.end(), name,
                             [](const TreeEntry& e, std::string_view n) { return e.name < n; });
  if (it == entries.end() || it->name != name) return nullptr;
  return &*it;
}

Status ValidateEntryName(std::string_view name) {
  if (name.empty()) return Status::Malformed("empty entry name");
  if (name.size() > Limits::kMaxNameBytes)
    return Status::Malformed("entry name longer than 255 bytes: " + Printable(name));
  if (name == "." || name == "..") return Status::Malformed("entry name '" + std::string(name) + "'");
  if (name.find('/') != std::string_view::npos)
    return Status::Malformed("entry name contains '/': " + Printable(name));
  if (name.find('\0') != std::string_view::npos)
    return Status::Malformed("entry name contains NUL: " + Printable(name));
  return Status::OK();
}

Status ValidateHookName(std::string_view name) {
  auto ok_first = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  auto ok_rest = [&](char c) { return ok_first(c) || c == '.' || c == '_' || c == '-'; };
  if (name.empty() || name.size() > Limits::kMaxHookName || !ok_first(name[0]) ||
      !std::all_of(name.begin() + 1, name.end(), ok_rest))
    return Status::InvalidArgument("bad hook name '" + Printable(name) +
                                   "': must match [a-z0-9][a-z0-9._-]{0,63}");
  return Status::OK();
}

Status ValidateFeature(std::string_view f) {
  if (f.empty()) return Status::OK();
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  auto ok_rest = [&](char c) { return alnum(c) || std::string_view("._:/+-").find(c) != std::string_view::npos; };
  if (f.size() > Limits::kMaxFeature || !alnum(f[0]) || !std::all_of(f.begin() + 1, f.end(), ok_rest))
    return Status::InvalidArgument("bad feature '" + Printable(f) +
                                   "': must match [A-Za-z0-9][A-Za-z0-9._:/+-]{0,63}");
  return Status::OK();
}

Result<std::string> EncodeTree(Tree tree) {
  if (tree.entries.size() > Limits::kMaxTreeEntries)
    return Status::Malformed("tree has more than " + std::to_string(Limits::kMaxTreeEntries) + " entries");
  std::sort(tree.entries.begin(), tree.entries.end(),
            [](const TreeEntry& a, const TreeEntry& b) { return a.name < b.name; });
  std::string out;
  coding::PutLE32(&out, uint32_t(tree.entries.size()));
  for (size_t i = 0; i < tree.entries.size(); ++i) {
    const TreeEntry& e = tree.entries[i];
    HOOKFS_RETURN_IF_ERROR(ValidateEntryName(e.name));
    if (i > 0 && tree.entries[i - 1].name == e.name)
      return Status::Malformed("duplicate entry name '" + Printable(e.name) + "'");
    coding::PutU8(&out, uint8_t(e.type));
    coding::PutU8(&out, uint8_t(e.name.size()));
    out += e.name;
    switch (e.type) {
      case EntryType::kFile:
      case EntryType::kExecutable:
        out.append(e.id.AsKey());
        coding::PutLE64(&out, e.size);
        break;
      case EntryType::kSymlink:
        if (e.target.empty() || e.target.size() > Limits::kMaxSymlinkTarget ||
            e.target.find('\0') != std::string::npos)
          return Status::Malformed("bad symlink target for '" + Printable(e.name) + "'");
        coding::PutLE16(&out, uint16_t(e.target.size()));
        out += e.target;
        break;
      case EntryType::kDirectory:
        out.append(e.id.AsKey());
        break;
      default:
        return Status::Malformed("bad entry type for '" + Printable(e.name) + "'");
    }
  }
  if (out.size() > Limits::kMaxTreeBytes) return Status::Malformed("tree encoding larger than 16 MiB");
  return out;
}

Result<Tree> DecodeTree(std::string_view bytes) {
  if (bytes.size() > Limits::kMaxTreeBytes) return Status::Malformed("tree encoding larger than 16 MiB");
  coding::Reader r(bytes);
  uint32_t count;
  if (!r.LE32v(&count)) return Status::Malformed("tree shorter than its entry count");
  if (count > Limits::kMaxTreeEntries)
    return Status::Malformed("tree declares " + std::to_string(count) + " entries, limit " +
                             std::to_string(Limits::kMaxTreeEntries));
  Tree tree;
  tree.entries.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    TreeEntry e;
    uint8_t type, name_len;
    std::string_view name, raw;
    if (!r.U8(&type) || !r.U8(&name_len) || !r.Bytes(name_len, &name))
      return Status::Malformed("tree truncated in entry " + std::to_string(i));
    HOOKFS_RETURN_IF_ERROR(ValidateEntryName(name));
    e.name = std::string(name);
    if (i > 0 && !(tree.entries.back().name < e.name))
      return Status::Malformed("tree entries not strictly sorted at '" + Printable(e.name) + "'");
    switch (type) {
      case uint8_t(EntryType::kFile):
      case uint8_t(EntryType::kExecutable): {
        uint64_t size;
        if (!r.Bytes(ObjectId::kSize, &raw) || !r.LE64v(&size))
          return Status::Malformed("tree truncated in entry '" + Printable(e.name) + "'");
        if (size > Limits::kMaxBlobSize) return Status::Malformed("file size over 1 TiB: '" + Printable(e.name) + "'");
        e.id = ObjectId::FromBytes(raw.data());
        e.size = size;
        break;
      }
      case uint8_t(EntryType::kSymlink): {
        uint16_t len;
        std::string_view target;
        if (!r.LE16(&len) || !r.Bytes(len, &target))
          return Status::Malformed("tree truncated in symlink '" + Printable(e.name) + "'");
        if (target.empty() || target.size() > Limits::kMaxSymlinkTarget || target.find('\0') != std::string_view::npos)
          return Status::Malformed("bad symlink target for '" + Printable(e.name) + "'");
        e.target = std::string(target);
        break;
      }
      case uint8_t(EntryType::kDirectory):
        if (!r.Bytes(ObjectId::kSize, &raw))
          return Status::Malformed("tree truncated in entry '" + Printable(e.name) + "'");
        e.id = ObjectId::FromBytes(raw.data());
        break;
      default:
        return Status::Malformed("unknown entry type " + std::to_string(type) + " for '" + Printable(e.name) + "'");
    }
    e.type = EntryType(type);
    tree.entries.push_back(std::move(e));
  }
  if (!r.done()) return Status::Malformed("trailing bytes after tree entries");
  return tree;
}

}  // namespace hookfs
