#include "io/mapped_guard.h"

#include <csetjmp>
#include <csignal>
#include <mutex>

namespace bfm::io {

namespace {

thread_local sigjmp_buf* t_guard = nullptr;  // the innermost guarded call of this thread, if any
struct sigaction g_previous;                  // SIGBUS's action before ours

void on_sigbus(int signal, siginfo_t* info, void* ucontext) {
  if (sigjmp_buf* env = t_guard) siglongjmp(*env, 1);
  // Not ours: hand the signal to whoever had it before.
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction) return g_previous.sa_sigaction(signal, info, ucontext);
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN && g_previous.sa_handler) {
    return g_previous.sa_handler(signal);
  }
  // The default action: restore it; returning re-runs the faulting access, which then ends the process as usual.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGBUS, &dfl, nullptr);
}

void install() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous);
  });
}

}  // namespace

bool run_guarded(void (*fn)(void*), void* context) {
  install();
  sigjmp_buf env;
  sigjmp_buf* const outer = t_guard;
  if (sigsetjmp(env, 1) != 0) {  // back from on_sigbus (the signal mask restored by siglongjmp)
    t_guard = outer;
    return false;
  }
  t_guard = &env;
  fn(context);
  t_guard = outer;
  return true;
}

}  // namespace bfm::io
