// The float32 AVX-512 functions of rnn_avx512.cc, called by rnn_cpu.cc only
// where Avx512Supported() says the CPU has the instructions.
#ifndef RNNJAX_RNN_KERNELS_H_
#define RNNJAX_RNN_KERNELS_H_

#include <cstdint>

namespace rnnjax_kernels {

bool Avx512Supported();

// C[m, p·pstep + v·vstride + l] (+)= Σ_k A[m, k] Wp[p][k][v][l] for rows m < M and
// panels p in [p0, p1) of nv vectors of 16 columns (Wp packed by rnn_cpu.cc).
void Avx512Gemm(const float* A, int64_t lda, int64_t M, int64_t K, const float* Wp, int64_t nv,
                int64_t p0, int64_t p1, int64_t pstep, int64_t vstride, float* C, int64_t ldc,
                bool accumulate);

void Avx512ForwardRow(int64_t cell, int64_t act, int64_t H, int64_t u0, int64_t u1,
                      const float* zx, const float* S, const float* bhn, const float* h_prev,
                      const float* c_prev, float* h, float* c, float* res);

void Avx512BackwardRow(int64_t cell, int64_t act, int64_t H, int64_t u0, int64_t u1,
                       const float* dh, const float* dc, const float* h, const float* h_prev,
                       const float* c, const float* c_prev, const float* res, float* dzx,
                       float* dzh, float* dh_prev, float* dc_prev);

}  // namespace rnnjax_kernels

#endif  // RNNJAX_RNN_KERNELS_H_
