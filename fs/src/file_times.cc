#include "file_times.h"

namespace hookfs::fs {

Result<EntryTimes> EntryTimes::For(const ReadView& view, std::string_view hook, uint32_t version, uint64_t dir_index) {
  EntryTimes t;
  t.dir_index_ = t.next_index_ = dir_index;
  if (hook.empty() || version == 0) return t;
  HOOKFS_ASSIGN_OR_RETURN(t.times_, ReleaseTimes::Load(view.tables(), view.txn(), hook, version));
  return t;
}

EntryTimes::Stamp EntryTimes::At(const Tree& tree, size_t i) {
  Stamp s;
  if (!times_) return s;
  if (i < next_) {
    next_ = 0;
    next_index_ = dir_index_;
  }
  for (; next_ < i; ++next_) next_index_ += times_->Span(tree.entries[next_]);
  s.index = next_index_;
  const TreeEntry& e = tree.entries[i];
  // A damaged value must not read past its end: show the commit time then.
  if (!e.IsDir() && s.index < times_->count()) s.mtime = times_->Mtime(s.index);
  return s;
}

}  // namespace hookfs::fs
