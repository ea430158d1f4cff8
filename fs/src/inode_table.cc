#include "inode_table.h"

namespace hookfs::fs {

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kRoot: return "root";
    case Kind::kHooksDir: return "hooks";
    case Kind::kHookDir: return "hook";
    case Kind::kHookJson: return "hook.json";
    case Kind::kLive: return "live";
    case Kind::kHistory: return "history";
    case Kind::kReleasesDir: return "releases";
    case Kind::kReleaseRoot: return "release";
    case Kind::kReleaseJson: return "release.json";
    case Kind::kTreeDir: return "tree-dir";
    case Kind::kTreeFile: return "tree-file";
    case Kind::kTreeSymlink: return "tree-symlink";
    case Kind::kTagsDir: return "tags";
    case Kind::kTag: return "tag";
    case Kind::kPending: return "pending-symlink";
    case Kind::kRunsDir: return "runs";
    case Kind::kRunDir: return "run";
    case Kind::kRunJson: return "run.json";
    case Kind::kRunRelease: return "run-release";
    case Kind::kRunResult: return "run-result";
    case Kind::kIncomingDir: return "incoming";
    case Kind::kSpool: return "spool";
    case Kind::kResult: return "result";
    case Kind::kObjectsDir: return "objects";
    case Kind::kBlobsDir: return "blobs";
    case Kind::kTreesDir: return "trees";
    case Kind::kBlob: return "blob";
    case Kind::kObjTree: return "object-tree";
    case Kind::kJournal: return "journal";
    case Kind::kKeysDir: return "keys";
    case Kind::kKey: return "key";
  }
  return "?";
}

bool Node::IsDir() const {
  switch (kind) {
    case Kind::kRoot: case Kind::kHooksDir: case Kind::kHookDir: case Kind::kReleasesDir:
    case Kind::kReleaseRoot: case Kind::kTreeDir: case Kind::kTagsDir: case Kind::kRunsDir:
    case Kind::kRunDir: case Kind::kIncomingDir: case Kind::kObjectsDir: case Kind::kBlobsDir:
    case Kind::kTreesDir: case Kind::kObjTree: case Kind::kKeysDir:
      return true;
    default:
      return false;
  }
}

bool Node::IsSymlink() const {
  switch (kind) {
    case Kind::kLive: case Kind::kTreeSymlink: case Kind::kTag: case Kind::kPending:
    case Kind::kRunRelease:
      return true;
    default:
      return false;
  }
}

bool Node::SameAs(const Node& o) const {
  return kind == o.kind && parent == o.parent && name == o.name && release == o.release &&
         tag == o.tag && run == o.run && target == o.target && id == o.id && size == o.size &&
         etype == o.etype && mtime == o.mtime && serial == o.serial && tindex == o.tindex;
}

InodeTable::InodeTable() {
  auto root = std::make_shared<Node>();
  root->kind = Kind::kRoot;
  root->parent = kRootIno;
  nodes_[kRootIno] = Slot{std::move(root), 1};
}

NodePtr InodeTable::Get(Ino ino) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = nodes_.find(ino);
  return it == nodes_.end() ? nullptr : it->second.node;
}

std::pair<Ino, NodePtr> InodeTable::Bind(Node node) {
  std::lock_guard<std::mutex> lock(mu_);
  auto key = std::make_pair(node.parent, node.name);
  auto nit = names_.find(key);
  if (nit != names_.end()) {
    auto it = nodes_.find(nit->second);
    if (it != nodes_.end() && it->second.node->SameAs(node)) {
      ++it->second.nlookup;
      return {it->first, it->second.node};
    }
  }
  if (nit != names_.end()) pointers_.erase(nit->second);  // its name now shows another node
  Ino ino = next_++;
  bool pointer = node.kind == Kind::kLive || node.kind == Kind::kTag;
  auto ptr = std::make_shared<const Node>(std::move(node));
  nodes_[ino] = Slot{ptr, 1};
  names_[std::move(key)] = ino;
  if (pointer) pointers_.insert(ino);
  return {ino, ptr};
}

void InodeTable::Forget(Ino ino, uint64_t n) {
  if (ino == kRootIno) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = nodes_.find(ino);
  if (it == nodes_.end()) return;
  if (it->second.nlookup > n) {
    it->second.nlookup -= n;
    return;
  }
  auto key = std::make_pair(it->second.node->parent, it->second.node->name);
  auto nit = names_.find(key);
  if (nit != names_.end() && nit->second == ino) names_.erase(nit);
  pointers_.erase(ino);
  nodes_.erase(it);
}

std::vector<std::pair<Ino, NodePtr>> InodeTable::Pointers() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<Ino, NodePtr>> out;
  out.reserve(pointers_.size());
  for (Ino ino : pointers_) {
    auto it = nodes_.find(ino);
    if (it != nodes_.end()) out.emplace_back(ino, it->second.node);
  }
  return out;
}

void InodeTable::Unname(Ino ino) {
  std::lock_guard<std::mutex> lock(mu_);
  pointers_.erase(ino);
  auto it = nodes_.find(ino);
  if (it == nodes_.end()) return;
  auto nit = names_.find(std::make_pair(it->second.node->parent, it->second.node->name));
  if (nit != names_.end() && nit->second == ino) names_.erase(nit);
}

Ino InodeTable::Find(Ino parent, const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto nit = names_.find(std::make_pair(parent, name));
  return nit == names_.end() ? 0 : nit->second;
}

size_t InodeTable::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return nodes_.size();
}

}  // namespace hookfs::fs
