// keys/: trusted signing keys through the mount (DESIGN.md §8, docs/keys.md).
// Kept apart from namespace.cc: resolution, listing and changes of keys/NAME.
#include <ctime>

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "hookfs/keys.h"
#include "hookfs/namespace.h"
#include "inode_table.h"

namespace hookfs::fs {

namespace {
Node KeyNode(Ino dir_ino, const KeyInfo& k) {
  Node c;
  c.kind = Kind::kKey;
  c.parent = dir_ino;
  c.name = k.name;
  c.mtime = k.added_at;
  return c;
}
}  // namespace

Result<Node> Namespace::KeyChild(Ino dir_ino, const std::string& name) {
  if (!ValidateKeyName(name).ok()) return Status::NotFound(name);
  HOOKFS_ASSIGN_OR_RETURN(KeyInfo k, KeyRing(store_).Get(name));
  return KeyNode(dir_ino, k);
}

Result<std::vector<Node>> Namespace::KeyChildren(Ino dir_ino) {
  HOOKFS_ASSIGN_OR_RETURN(std::vector<KeyInfo> keys, KeyRing(store_).List());
  std::vector<Node> out;
  for (const KeyInfo& k : keys) out.push_back(KeyNode(dir_ino, k));
  return out;
}

Result<Entry> Namespace::CreateKey(const Caller& who, Ino parent, const Node& dir, std::string_view name) {
  if (dir.kind != Kind::kKeysDir) return ReadOnly(dir);
  HOOKFS_RETURN_IF_ERROR(options_.policy.CheckAdmin(who, "add keys"));
  if (Status s = ValidateKeyName(name); !s.ok()) return Status::InvalidArgument(s.message());
  // The key exists only once the document is committed on close; until then
  // the node shows an empty file.
  Node c;
  c.kind = Kind::kKey;
  c.parent = parent;
  c.name = std::string(name);
  c.mtime = std::time(nullptr);
  return Bind(std::move(c));
}

Status Namespace::CheckWriteKey(const Caller& who, const Node& n) {
  if (n.kind != Kind::kKey) return ReadOnly(n);
  return options_.policy.CheckAdmin(who, "add keys");
}

Status Namespace::CommitKey(const Caller& who, const Node& n, const std::string& document) {
  HOOKFS_RETURN_IF_ERROR(CheckWriteKey(who, n));
  auto k = KeyRing(store_).Add(n.name, document, ActorOf(who));
  if (!k.ok()) {
    spdlog::warn("keys/{}: rejected: {}", n.name, k.status().message());
    return k.status();
  }
  spdlog::info("keys/{} trusted (key_id {}) by uid {}", n.name, k->key_id, who.uid);
  if (Ino ino = table_->Find(n.parent, n.name)) notifier_->InodeChanged(ino);
  return Status::OK();
}

Status Namespace::RemoveKey(const Caller& who, Ino parent, std::string_view sv) {
  HOOKFS_RETURN_IF_ERROR(options_.policy.CheckAdmin(who, "remove keys"));
  std::string name(sv);
  if (!ValidateKeyName(name).ok()) return Status::NotFound(name);
  HOOKFS_RETURN_IF_ERROR(KeyRing(store_).Remove(name, ActorOf(who)));
  spdlog::info("keys/{} revoked by uid {}", name, who.uid);
  notifier_->EntryChanged(parent, name);
  return Status::OK();
}

}  // namespace hookfs::fs
