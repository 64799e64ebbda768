// OpenBLAS picks its matrix kernels for the processor when the library loads. Debian 12's OpenBLAS 0.3.21 does
// not know recent Xeons (Sapphire Rapids and later) and falls back to its SSE3 "Prescott" kernels, which made a
// training step twice as slow on such a machine (bench/RESULTS.md). OpenBLAS reads OPENBLAS_CORETYPE only at load
// time, so the fix has to happen before: when the loaded core is Prescott on a processor with AVX-512 (AVX2), bfm
// sets OPENBLAS_CORETYPE=SkylakeX (Haswell) and executes itself again, once. A user's own OPENBLAS_CORETYPE is
// always respected, and BFM_KEEP_BLAS_CORE=1 turns this off.
#pragma once

#include <string>

namespace bfm::runtime {

// Call first in main(). Returns only if no restart is needed (or the restart failed, which is harmless).
void select_blas_core(char** argv);

// "SkylakeX", "Haswell", "Prescott", ... or "unknown" when the BLAS is not OpenBLAS.
std::string blas_core_name();

}  // namespace bfm::runtime
