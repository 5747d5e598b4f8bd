// The float32 fast path on AVX-512: a register-blocked GEMM over weights packed
// once per call, and the cells' elementwise step on 16-lane registers.
//
// Compiled for AVX-512 (the pragma below) but called only after a runtime check
// (Avx512Supported), so the extension still loads on CPUs without it. Nothing
// here is visible to the other file but the functions declared in rnn_kernels.h;
// everything else has internal linkage, so no AVX-512 copy of an inline function
// can stand in for the portable one at link time.
#include <cstdint>

#include "rnn_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f,avx512dq,fma")
#include <immintrin.h>

#include "rnn_cells.h"

namespace {

// ---------------------------------------------------------------- 16 float lanes

struct Zmm {
  static constexpr int64_t kWidth = 16;
  __m512 v;
  static Zmm load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static Zmm set1(float x) { return {_mm512_set1_ps(x)}; }
};
inline void store(float* p, Zmm a) { _mm512_storeu_ps(p, a.v); }
inline Zmm operator+(Zmm a, Zmm b) { return {_mm512_add_ps(a.v, b.v)}; }
inline Zmm operator-(Zmm a, Zmm b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline Zmm operator*(Zmm a, Zmm b) { return {_mm512_mul_ps(a.v, b.v)}; }

// exp(x) for x <= 0 (the only case used): 2^n · p(r), r = x − n ln2 in
// [−ln2/2, ln2/2], p a degree-6 Taylor polynomial (relative error ~2e-8 before
// rounding), the power of two applied by scalef (which also flushes exp(−large)
// to zero without overflow).
inline __m512 ExpNonPositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-100.0f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);  // ln2, high part
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);    // ln2, low part
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

inline __m512 Abs(__m512 x) { return _mm512_andnot_ps(_mm512_set1_ps(-0.0f), x); }

// σ(x) = 1 / (1 + e^{−x}) for x >= 0, and e^{x} / (1 + e^{x}) below (no cancellation).
inline Zmm sigmoid(Zmm a) {
  __m512 e = ExpNonPositive(_mm512_sub_ps(_mm512_setzero_ps(), Abs(a.v)));  // e^{−|x|}
  __m512 s = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
  __mmask16 neg = _mm512_cmp_ps_mask(a.v, _mm512_setzero_ps(), _CMP_LT_OQ);
  return {_mm512_mask_mul_ps(s, neg, e, s)};
}

// tanh(x) = sign(x) (1 − e^{−2|x|}) / (1 + e^{−2|x|}); near 0, where the
// difference cancels, its odd Taylor polynomial to x⁷ (error < 1e-9 for |x| < 0.1).
inline Zmm tanh_(Zmm a) {
  __m512 ax = Abs(a.v);
  __m512 e = ExpNonPositive(_mm512_mul_ps(ax, _mm512_set1_ps(-2.0f)));
  __m512 one = _mm512_set1_ps(1.0f);
  __m512 t = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
  __m512 x2 = _mm512_mul_ps(a.v, a.v);
  __m512 p = _mm512_set1_ps(-17.0f / 315);
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.0f / 15));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-1.0f / 3));
  p = _mm512_fmadd_ps(p, x2, one);
  __m512 small = _mm512_mul_ps(p, ax);
  t = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.1f), _CMP_LT_OQ), t, small);
  __m512 sign = _mm512_and_ps(a.v, _mm512_set1_ps(-0.0f));
  return {_mm512_or_ps(t, sign)};
}

inline Zmm relu(Zmm a) { return {_mm512_max_ps(a.v, _mm512_setzero_ps())}; }
inline Zmm relu_grad(Zmm y) {
  __mmask16 pos = _mm512_cmp_ps_mask(y.v, _mm512_setzero_ps(), _CMP_GT_OQ);
  return {_mm512_maskz_mov_ps(pos, _mm512_set1_ps(1.0f))};
}

// ---------------------------------------------------------------- the GEMM

// C[m, col(v) + l] (+)= Σ_k A[m, k] · Wp[k, v, l] for MR rows and NV vectors of
// 16 columns: MR·NV accumulators in registers, one broadcast of A per row and k.
template <int MR, int NV>
void Micro(const float* A, int64_t lda, int64_t K, const float* Wp, float* C, int64_t ldc,
           int64_t vstride, bool accumulate) {
  __m512 c[MR][NV];
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v)
      c[m][v] = accumulate ? _mm512_loadu_ps(C + m * ldc + v * vstride) : _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 w[NV];
    for (int v = 0; v < NV; ++v) w[v] = _mm512_load_ps(Wp + (k * NV + v) * 16);
    for (int m = 0; m < MR; ++m) {
      __m512 a = _mm512_set1_ps(A[m * lda + k]);
      for (int v = 0; v < NV; ++v) c[m][v] = _mm512_fmadd_ps(a, w[v], c[m][v]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(C + m * ldc + v * vstride, c[m][v]);
}

template <int NV, int MR>
void MicroRows(int64_t mr, const float* A, int64_t lda, int64_t K, const float* Wp, float* C,
               int64_t ldc, int64_t vstride, bool accumulate) {
  if constexpr (MR > 0) {
    if (mr == MR) return Micro<MR, NV>(A, lda, K, Wp, C, ldc, vstride, accumulate);
    return MicroRows<NV, MR - 1>(mr, A, lda, K, Wp, C, ldc, vstride, accumulate);
  }
}

constexpr int64_t kBlockK = 256;  // a panel's slice of k stays in L1/L2 across row blocks

template <int NV, int MR>
void GemmNV(const float* A, int64_t lda, int64_t M, int64_t K, const float* Wp, int64_t p0,
            int64_t p1, int64_t pstep, int64_t vstride, float* C, int64_t ldc, bool accumulate) {
  for (int64_t k0 = 0; k0 < K; k0 += kBlockK) {
    int64_t kc = K - k0 < kBlockK ? K - k0 : kBlockK;
    for (int64_t p = p0; p < p1; ++p) {
      const float* panel = Wp + (p * K + k0) * NV * 16;
      for (int64_t m0 = 0; m0 < M; m0 += MR) {
        int64_t mr = M - m0 < MR ? M - m0 : MR;
        MicroRows<NV, MR>(mr, A + m0 * lda + k0, lda, kc, panel, C + m0 * ldc + p * pstep, ldc,
                          vstride, accumulate || k0 > 0);
      }
    }
  }
}

}  // namespace

namespace rnnjax_kernels {

bool Avx512Supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("fma");
}

void Avx512Gemm(const float* A, int64_t lda, int64_t M, int64_t K, const float* Wp, int64_t nv,
                int64_t p0, int64_t p1, int64_t pstep, int64_t vstride, float* C, int64_t ldc,
                bool accumulate) {
  switch (nv) {
    case 4: return GemmNV<4, 6>(A, lda, M, K, Wp, p0, p1, pstep, vstride, C, ldc, accumulate);
    case 3: return GemmNV<3, 8>(A, lda, M, K, Wp, p0, p1, pstep, vstride, C, ldc, accumulate);
    default: return GemmNV<1, 8>(A, lda, M, K, Wp, p0, p1, pstep, vstride, C, ldc, accumulate);
  }
}

void Avx512ForwardRow(int64_t cell, int64_t act, int64_t H, int64_t u0, int64_t u1,
                      const float* zx, const float* S, const float* bhn, const float* h_prev,
                      const float* c_prev, float* h, float* c, float* res) {
  rnnjax_cells::ForwardRow<Zmm, float>(cell, act, H, u0, u1, zx, S, bhn, h_prev, c_prev, h, c,
                                       res);
}

void Avx512BackwardRow(int64_t cell, int64_t act, int64_t H, int64_t u0, int64_t u1,
                       const float* dh, const float* dc, const float* h, const float* h_prev,
                       const float* c, const float* c_prev, const float* res, float* dzx,
                       float* dzh, float* dh_prev, float* dc_prev) {
  rnnjax_cells::BackwardRow<Zmm, float>(cell, act, H, u0, u1, dh, dc, h, h_prev, c, c_prev, res,
                                        dzx, dzh, dh_prev, dc_prev);
}

}  // namespace rnnjax_kernels

#else  // not x86-64 GCC/Clang: no AVX-512 path, the plain loops run everywhere

namespace rnnjax_kernels {
bool Avx512Supported() { return false; }
void Avx512Gemm(const float*, int64_t, int64_t, int64_t, const float*, int64_t, int64_t, int64_t,
                int64_t, int64_t, float*, int64_t, bool) {}
void Avx512ForwardRow(int64_t, int64_t, int64_t, int64_t, int64_t, const float*, const float*,
                      const float*, const float*, const float*, float*, float*, float*) {}
void Avx512BackwardRow(int64_t, int64_t, int64_t, int64_t, int64_t, const float*, const float*,
                       const float*, const float*, const float*, const float*, const float*,
                       float*, float*, float*, float*) {}
}  // namespace rnnjax_kernels

#endif
