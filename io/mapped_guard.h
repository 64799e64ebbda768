// Reading a memory-mapped file without dying of it. A page of a mapping that cannot be read (the file was truncated
// under the mapping, an I/O error, a network file system gone) raises SIGBUS in the reading thread; read through
// run_guarded() it becomes a false return, so the caller can throw an error that names the file instead of the
// process being killed. Outside a guarded call SIGBUS keeps its previous meaning (handler or default action).
//
// `fn` runs in a sigsetjmp frame and may be left by siglongjmp: it must not own objects with destructors, locks or
// allocations (plain loops over the mapping: checksums, memcpy, conversions).
#pragma once

namespace bfm::io {

// Calls fn(context); true if it returned, false if it touched an unreadable page of a mapping. Thread-safe; nests.
bool run_guarded(void (*fn)(void*), void* context);

}  // namespace bfm::io
