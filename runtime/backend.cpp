// backend.cpp — the checking, tracing front of the backend interface (see backend.h).
#include "backend.h"

#include <cerrno>

namespace umrt::rt {

int Backend::window_create(size_t bytes, DevWindow *w) {
  if (bytes == 0 || bytes % kBlockSize != 0 || !w) return -EINVAL;
  int rc = do_window_create(bytes, w);
  log(Level::debug, "%s: window %p + %zu -> %d", name(), w->base, bytes, rc);
  return rc;
}

void Backend::window_destroy(DevWindow *w) {
  if (!w || !w->base) return;
  do_window_destroy(w);
  w->base = nullptr;
  w->bytes = 0;
}

int Backend::chunk_map(DevWindow *w, size_t offset, uint32_t chunk, bool fresh) {
  if (!w || offset % kBlockSize || offset + kBlockSize > w->bytes ||
      uint64_t{chunk} * kBlockSize >= capacity())
    return -EINVAL;
  if (fresh && chunk_inject_.hit()) {
    log(Level::debug, "%s: creating chunk %u fails (fault injection: memory taken by others)", name(), chunk);
    return -ENOMEM;
  }
  return do_chunk_map(w, offset, chunk);
}

int Backend::inject(InjectKind k, uint64_t nth, uint64_t count) {
  if (k != InjectKind::chunk) return do_inject(k, nth, count);
  if (nth == 0 || count == 0) return -EINVAL;
  chunk_inject_.arm(nth, count);
  return 0;
}

int Backend::chunk_unmap(DevWindow *w, size_t offset) {
  if (!w || offset % kBlockSize || offset + kBlockSize > w->bytes) return -EINVAL;
  return do_chunk_unmap(w, offset);
}

int Backend::pin_host(void *p, size_t len) {
  if (!p || len == 0 || reinterpret_cast<uintptr_t>(p) % kPageSize || len % kPageSize) return -EINVAL;
  int rc = do_pin_host(p, len);
  log(Level::debug, "%s: pin host %p + %zu -> %d", name(), p, len, rc);
  return rc;
}

int Backend::transfer(CopyOp *ops, size_t n, Installer *inst) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; ++i) {
    ops[i].status = 0;
    ops[i].done = 0;
    if (ops[i].dir == CopyOp::D2H && !inst) return -EINVAL;
    if (ops[i].pinned && ops[i].dir != CopyOp::H2D) return -EINVAL;
  }
  return do_transfer(ops, n, inst);
}

}  // namespace umrt::rt
