// rnnjax's CPU kernel: the time loop of the built-in cells (LSTM, GRU with the
// reset gate after w_hn, Elman) in C++, forward and hand-written backward, as
// two XLA FFI handlers that rnnjax/_src/cpu_kernel.py calls through jax.ffi.
//
// Data flow of one call (time-major; G gate blocks, N = G·H):
//
//   forward:  for t = 0 .. T-1:
//               S = h_{t-1} w_h                     # [B, N], one GEMM
//               h_t, c_t, res_t = step(zx_t, S)     # the cell's elementwise part
//               (held where mask[t, b] is 0)
//   backward: for t = T-1 .. 0:
//               dzx_t, dzh_t, dc_{t-1} = step'(dh_t + dys_t, dc_t, res_t)
//               dh_{t-1} = direct_t + dzh_t w_hᵀ    # [B, H], one GEMM
//
// The input projection zx = x w_x + b and the weight gradients (dw_x, dw_h,
// db, dx) are single matmuls over all T·B rows, done by XLA in cpu_kernel.py.
//
// The GEMM: float32 on a CPU with AVX-512 runs a register-blocked kernel
// (rnn_avx512.cc) over w_h (forward) and w_hᵀ (backward) packed once per call
// into panels of 16-column vectors; float64, and float32 where H is not a
// multiple of 16 or the CPU lacks AVX-512, run plain C++ loops.
//
// Threads: the hidden units are split between two threads (this one and a
// persistent worker), each owning the GEMM columns and the elementwise work of
// its units, so one barrier per step suffices (before the forward GEMM reads
// all of h_{t-1}; before the backward GEMM reads all of dzh_t).
#include <Python.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RNNJAX_PAUSE() _mm_pause()
#else
#define RNNJAX_PAUSE() std::this_thread::yield()
#endif

#include "rnn_cells.h"
#include "rnn_kernels.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using rnnjax_cells::Gates;
using rnnjax_cells::kElman;
using rnnjax_cells::kGruAfter;
using rnnjax_cells::kLstm;

namespace {

// ---------------------------------------------------------------- scalar lanes

template <class T>
struct Lane {
  static constexpr int64_t kWidth = 1;
  T v;
  static Lane load(const T* p) { return {*p}; }
  static Lane set1(T x) { return {x}; }
};
template <class T> void store(T* p, Lane<T> a) { *p = a.v; }
template <class T> Lane<T> operator+(Lane<T> a, Lane<T> b) { return {a.v + b.v}; }
template <class T> Lane<T> operator-(Lane<T> a, Lane<T> b) { return {a.v - b.v}; }
template <class T> Lane<T> operator*(Lane<T> a, Lane<T> b) { return {a.v * b.v}; }
template <class T> Lane<T> sigmoid(Lane<T> a) {
  // 1 / (1 + e^{-x}), written so that neither branch overflows
  if (a.v >= 0) return {T(1) / (T(1) + std::exp(-a.v))};
  T e = std::exp(a.v);
  return {e / (T(1) + e)};
}
template <class T> Lane<T> tanh_(Lane<T> a) { return {std::tanh(a.v)}; }
template <class T> Lane<T> relu(Lane<T> a) { return {a.v > 0 ? a.v : T(0)}; }
template <class T> Lane<T> relu_grad(Lane<T> y) { return {y.v > 0 ? T(1) : T(0)}; }

// ---------------------------------------------------------------- threads

// Waits until pred() holds: spins for a few microseconds (a step of a quiet
// machine is that short), then sleeps on cv, so that on a loaded machine a
// waiting thread gives its core to the thread it waits for.
template <class Pred>
void SpinThenWait(std::mutex& mu, std::condition_variable& cv, Pred pred) {
  for (int spins = 0; spins < 2000; ++spins) {
    if (pred()) return;
    RNNJAX_PAUSE();
  }
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, pred);
}

// A reusable barrier for the threads of one call.
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void Wait() {
    if (n_ == 1) return;
    int gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      {
        std::lock_guard<std::mutex> lock(mu_);
        gen_.fetch_add(1, std::memory_order_release);
      }
      cv_.notify_all();
      return;
    }
    SpinThenWait(mu_, cv_, [&] { return gen_.load(std::memory_order_acquire) != gen; });
  }

 private:
  const int n_;
  std::atomic<int> count_{0};
  std::atomic<int> gen_{0};
  std::mutex mu_;
  std::condition_variable cv_;
};

// One persistent worker thread. Run(fn) runs fn(0) here and fn(1) on the
// worker; a call that finds the worker busy (XLA may run two kernels at once)
// gets false and runs single-threaded.
class Worker {
 public:
  static Worker& Get() {
    static Worker* w = new Worker();  // never destroyed: the thread outlives exit
    return *w;
  }
  bool Run(const std::function<void(int)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    uint64_t ticket;
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &fn;
      ticket = ++posted_;
    }
    cv_.notify_one();
    fn(0);
    SpinThenWait(done_mu_, done_cv_,
                 [&] { return done_.load(std::memory_order_acquire) == ticket; });
    return true;
  }

 private:
  Worker() : thread_([this] { Loop(); }) { thread_.detach(); }
  void Loop() {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return posted_ != seen; });
        seen = posted_;
        job = job_;
      }
      (*job)(1);
      {
        std::lock_guard<std::mutex> lock(done_mu_);
        done_.store(seen, std::memory_order_release);
      }
      done_cv_.notify_all();
    }
  }
  std::mutex busy_, mu_, done_mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* job_ = nullptr;
  uint64_t posted_ = 0;
  std::atomic<uint64_t> done_{0};
  std::thread thread_;
};

// Below this many multiply-adds in a step's GEMM (B·H·G·H) one thread runs the
// call: the latency shape's LSTM step (B = 1, H = 128: 2^16) ran faster alone.
constexpr int64_t kParallelMinWork = int64_t{1} << 20;

int ThreadsWanted(int64_t B, int64_t H, int64_t G) {
  static const int forced = [] {
    const char* s = std::getenv("RNNJAX_FFI_THREADS");
    return s ? std::atoi(s) : 0;
  }();
  if (forced > 0) return forced >= 2 ? 2 : 1;
  if (std::thread::hardware_concurrency() < 2) return 1;
  // Below this many multiply-adds a step, the barrier costs more than the split saves.
  return B * H * G * H >= kParallelMinWork ? 2 : 1;
}

// ---------------------------------------------------------------- the plan of a call

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
using Packed = std::unique_ptr<float[], AlignedFree>;

Packed AllocFloats(int64_t n) {
  size_t bytes = ((static_cast<size_t>(n) * sizeof(float) + 63) / 64) * 64;
  return Packed(static_cast<float*>(std::aligned_alloc(64, bytes ? bytes : 64)));
}

// How the GEMM of one direction is cut: panels of nv vectors of 16 columns,
// panel p, vector v starting at column p·pstep + v·vstride; `units` hidden units
// per panel.
struct Panels {
  int64_t nv, pstep, vstride, units;
};

struct Plan {
  int64_t T, B, H, G, N, cell, act;
  bool fast;             // float32, AVX-512, H a multiple of 16
  Panels fwd, bwd;
  int threads;
  int64_t split;         // with two threads, thread 0 owns units [0, split), thread 1 [split, H)
  int64_t U0(int j) const { return j == 0 ? 0 : split; }
  int64_t U1(int j, int n) const { return j == 0 && n > 1 ? split : H; }
};

Plan MakePlan(int64_t T, int64_t B, int64_t H, int64_t cell, int64_t act, bool is_float) {
  static const bool avx512 = rnnjax_kernels::Avx512Supported();
  Plan p{T, B, H, Gates(cell), Gates(cell) * H, cell, act, false, {}, {}, 1, H};
  p.fast = is_float && avx512 && H % 16 == 0;
  int64_t align = 1;
  if (p.fast) {
    if (p.G > 1) {
      p.fwd = {p.G, 16, H, 16};  // one vector per gate: the panel holds all gates of 16 units
    } else {
      int64_t nv = H % 64 == 0 ? 4 : 1;
      p.fwd = {nv, 16 * nv, 16, 16 * nv};
    }
    int64_t nv = H % 64 == 0 ? 4 : 1;
    p.bwd = {nv, 16 * nv, 16, 16 * nv};
    align = std::max(p.fwd.units, p.bwd.units);
  }
  int threads = ThreadsWanted(B, H, p.G);
  int64_t split = (H / 2 / align) * align;
  if (threads > 1 && split > 0 && split < H) {
    p.threads = 2;
    p.split = split;
  }
  return p;
}

// Wp[p][k][v][l] = W[k, p·pstep + v·vstride + l]: w_h [H, N] for the forward.
Packed PackForward(const float* W, const Plan& p) {
  const Panels& q = p.fwd;
  int64_t P = p.H / q.units, K = p.H;
  Packed out = AllocFloats(P * K * q.nv * 16);
  for (int64_t i = 0; i < P; ++i)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t v = 0; v < q.nv; ++v)
        std::memcpy(&out[((i * K + k) * q.nv + v) * 16], W + k * p.N + i * q.pstep + v * q.vstride,
                    16 * sizeof(float));
  return out;
}

// Wb[p][j][v][l] = W[p·pstep + v·16 + l, j] = w_hᵀ[j, unit]: w_hᵀ [N, H] for the backward.
Packed PackBackward(const float* W, const Plan& p) {
  const Panels& q = p.bwd;
  int64_t P = p.H / q.units, K = p.N;
  Packed out = AllocFloats(P * K * q.nv * 16);
  for (int64_t i = 0; i < P; ++i)
    for (int64_t v = 0; v < q.nv; ++v)
      for (int64_t l = 0; l < 16; ++l) {
        const float* row = W + (i * q.pstep + v * q.vstride + l) * p.N;
        float* dst = &out[(i * K * q.nv + v) * 16 + l];
        for (int64_t j = 0; j < K; ++j) dst[j * q.nv * 16] = row[j];
      }
  return out;
}

// Subnormal floats flushed to zero (FTZ, DAZ) while a kernel runs, as XLA's
// CPU code runs: gradients that decay over a long backward pass otherwise
// reach subnormals, whose arithmetic is many times slower.
class FlushDenormals {
 public:
#if defined(__x86_64__) || defined(__i386__)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#endif
};

// body(j, n, barrier) on n = p.threads threads, or on this one alone (n = 1)
// when the worker is busy with another call.
using Body = std::function<void(int, int, Barrier&)>;
void Run(const Plan& p, const Body& body) {
  if (p.threads > 1) {
    Barrier barrier(2);
    std::function<void(int)> fn = [&](int j) {
      FlushDenormals ftz;
      body(j, 2, barrier);
    };
    if (Worker::Get().Run(fn)) return;
  }
  FlushDenormals ftz;
  Barrier alone(1);
  body(0, 1, alone);
}

// ---------------------------------------------------------------- forward

// S[:, columns of units u0..u1 in every gate] = A [B, H] · w_h (plain loops).
template <class T>
void GemmForwardPlain(const T* A, const T* W, const Plan& p, int64_t u0, int64_t u1, T* S) {
  for (int64_t m = 0; m < p.B; ++m)
    for (int64_t g = 0; g < p.G; ++g) {
      T* s = S + m * p.N + g * p.H;
      std::fill(s + u0, s + u1, T(0));
      for (int64_t k = 0; k < p.H; ++k) {
        T a = A[m * p.H + k];
        const T* w = W + k * p.N + g * p.H;
        for (int64_t u = u0; u < u1; ++u) s[u] += a * w[u];
      }
    }
}

// D[:, u0..u1] += dZ [B, N] · w_hᵀ (plain loops).
template <class T>
void GemmBackwardPlain(const T* dZ, const T* W, const Plan& p, int64_t u0, int64_t u1, T* D) {
  for (int64_t m = 0; m < p.B; ++m)
    for (int64_t u = u0; u < u1; ++u) {
      const T* z = dZ + m * p.N;
      const T* w = W + u * p.N;
      T acc = 0;
      for (int64_t j = 0; j < p.N; ++j) acc += z[j] * w[j];
      D[m * p.H + u] += acc;
    }
}

template <class T>
void Forward(const Plan& p, const T* zx, const T* W, const T* bhn, const T* h0, const T* c0,
             const int32_t* mask, T* hs, T* cs, T* res) {
  const int64_t T_ = p.T, B = p.B, H = p.H, N = p.N;
  const bool lstm = p.cell == kLstm;
  const int64_t R = res ? rnnjax_cells::Residuals(p.cell) : 0;
  std::unique_ptr<T[]> S(new T[B * N]);
  Packed Wp;
  if constexpr (std::is_same_v<T, float>) {
    if (p.fast) Wp = PackForward(W, p);
  }
  auto body = [&](int j, int n, Barrier& barrier) {
    const int64_t u0 = p.U0(j), u1 = p.U1(j, n);
    for (int64_t t = 0; t < T_; ++t) {
      const T* hp = t ? hs + (t - 1) * B * H : h0;
      const T* cp = lstm ? (t ? cs + (t - 1) * B * H : c0) : nullptr;
      if (t) barrier.Wait();  // every unit of h_{t-1} written
      bool done = false;
      if constexpr (std::is_same_v<T, float>) {
        if (p.fast) {
          const Panels& q = p.fwd;
          rnnjax_kernels::Avx512Gemm(hp, H, B, H, Wp.get(), q.nv, u0 / q.units, u1 / q.units,
                                     q.pstep, q.vstride, S.get(), N, false);
          done = true;
        }
      }
      if (!done) GemmForwardPlain(hp, W, p, u0, u1, S.get());
      for (int64_t m = 0; m < B; ++m) {
        T* h = hs + (t * B + m) * H;
        T* c = lstm ? cs + (t * B + m) * H : nullptr;
        T* r = R ? res + (t * B + m) * R * H : nullptr;
        if (!mask[t * B + m]) {  // padding: hold the carry
          std::copy(hp + m * H + u0, hp + m * H + u1, h + u0);
          if (lstm) std::copy(cp + m * H + u0, cp + m * H + u1, c + u0);
          if (r)
            for (int64_t k = 0; k < R; ++k) std::fill(r + k * H + u0, r + k * H + u1, T(0));
          continue;
        }
        const T* z = zx + (t * B + m) * N;
        const T* s = S.get() + m * N;
        const T* hpm = hp + m * H;
        const T* cpm = lstm ? cp + m * H : nullptr;
        if constexpr (std::is_same_v<T, float>) {
          if (p.fast) {
            rnnjax_kernels::Avx512ForwardRow(p.cell, p.act, H, u0, u1, z, s, bhn, hpm, cpm, h, c,
                                             r);
            continue;
          }
        }
        rnnjax_cells::ForwardRow<Lane<T>, T>(p.cell, p.act, H, u0, u1, z, s, bhn, hpm, cpm, h, c,
                                             r);
      }
    }
  };
  Run(p, body);
}

// ---------------------------------------------------------------- backward

template <class T>
void Backward(const Plan& p, const T* W, const T* h0, const T* c0, const int32_t* mask,
              const T* hs, const T* cs, const T* res, const T* dys, const T* dhT, const T* dcT,
              T* dzx, T* dzh, T* dh0, T* dc0) {
  const int64_t T_ = p.T, B = p.B, H = p.H, N = p.N;
  const bool lstm = p.cell == kLstm;
  const int64_t R = rnnjax_cells::Residuals(p.cell);
  // D: ∂L/∂h_t from later steps (then dh_{t-1}); DC: ∂L/∂c_t (LSTM). Each
  // thread reads and writes only its own units of both.
  std::copy(dhT, dhT + B * H, dh0);
  if (lstm) std::copy(dcT, dcT + B * H, dc0);
  T* D = dh0;
  T* DC = lstm ? dc0 : nullptr;
  Packed Wb;
  if constexpr (std::is_same_v<T, float>) {
    if (p.fast) Wb = PackBackward(W, p);
  }
  auto body = [&](int j, int n, Barrier& barrier) {
    const int64_t u0 = p.U0(j), u1 = p.U1(j, n);
    for (int64_t t = T_ - 1; t >= 0; --t) {
      const T* hp = t ? hs + (t - 1) * B * H : h0;
      const T* cp = lstm ? (t ? cs + (t - 1) * B * H : c0) : nullptr;
      T* rows = dzh ? dzh + t * B * N : dzx + t * B * N;  // what the GEMM reads
      for (int64_t m = 0; m < B; ++m) {
        T* d = D + m * H;
        const T* dy = dys + (t * B + m) * H;
        for (int64_t u = u0; u < u1; ++u) d[u] += dy[u];  // y_t = h_t
        T* zx_row = dzx + (t * B + m) * N;
        T* zh_row = dzh ? dzh + (t * B + m) * N : nullptr;
        if (!mask[t * B + m]) {  // padding: ∂L/∂carry passes through, no gradient from the step
          for (int64_t g = 0; g < p.G; ++g) {
            std::fill(zx_row + g * H + u0, zx_row + g * H + u1, T(0));
            if (zh_row) std::fill(zh_row + g * H + u0, zh_row + g * H + u1, T(0));
          }
          continue;
        }
        const T* h = hs + (t * B + m) * H;
        const T* c = lstm ? cs + (t * B + m) * H : nullptr;
        const T* r = R ? res + (t * B + m) * R * H : nullptr;
        const T* hpm = hp + m * H;
        const T* cpm = lstm ? cp + m * H : nullptr;
        T* dc = lstm ? DC + m * H : nullptr;
        if constexpr (std::is_same_v<T, float>) {
          if (p.fast) {
            rnnjax_kernels::Avx512BackwardRow(p.cell, p.act, H, u0, u1, d, dc, h, hpm, c, cpm, r,
                                              zx_row, zh_row, d, dc);
            continue;
          }
        }
        rnnjax_cells::BackwardRow<Lane<T>, T>(p.cell, p.act, H, u0, u1, d, dc, h, hpm, c, cpm, r,
                                              zx_row, zh_row, d, dc);
      }
      barrier.Wait();  // every unit of dzh_t written
      bool done = false;
      if constexpr (std::is_same_v<T, float>) {
        if (p.fast) {
          const Panels& q = p.bwd;
          rnnjax_kernels::Avx512Gemm(rows, N, B, N, Wb.get(), q.nv, u0 / q.units, u1 / q.units,
                                     q.pstep, q.vstride, D, H, true);
          done = true;
        }
      }
      if (!done) GemmBackwardPlain(rows, W, p, u0, u1, D);
    }
  };
  Run(p, body);
}

// ---------------------------------------------------------------- FFI handlers

ffi::Error CheckCell(int64_t cell, int64_t act) {
  if (cell != kLstm && cell != kGruAfter && cell != kElman)
    return ffi::Error::InvalidArgument("rnnjax cpu kernel: unknown cell code " +
                                       std::to_string(cell));
  if (act < 0 || act > 3)
    return ffi::Error::InvalidArgument("rnnjax cpu kernel: unknown activation code " +
                                       std::to_string(act));
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::AnyBuffer zx, ffi::AnyBuffer w_h, ffi::AnyBuffer b_hn,
                       ffi::AnyBuffer h0, ffi::AnyBuffer c0, ffi::Buffer<ffi::S32> mask,
                       ffi::Result<ffi::AnyBuffer> hs, ffi::Result<ffi::AnyBuffer> cs,
                       ffi::Result<ffi::AnyBuffer> res, int64_t cell, int64_t act, bool keep) {
  if (auto e = CheckCell(cell, act); e.failure()) return e;
  auto zd = zx.dimensions();
  if (zd.size() != 3) return ffi::Error::InvalidArgument("rnnjax cpu kernel: zx must be [T, B, N]");
  const int64_t T_ = zd[0], B = zd[1], H = w_h.dimensions()[0];
  if (zd[2] != Gates(cell) * H)
    return ffi::Error::InvalidArgument("rnnjax cpu kernel: zx's last axis is not G*H");
  const bool lstm = cell == kLstm;
  const bool with_res = keep && rnnjax_cells::Residuals(cell) > 0;
  auto type = zx.element_type();
  if (type == ffi::DataType::F32) {
    Plan p = MakePlan(T_, B, H, cell, act, true);
    Forward<float>(p, zx.typed_data<float>(), w_h.typed_data<float>(),
                   cell == kGruAfter ? b_hn.typed_data<float>() : nullptr, h0.typed_data<float>(),
                   lstm ? c0.typed_data<float>() : nullptr, mask.typed_data(),
                   hs->typed_data<float>(), lstm ? cs->typed_data<float>() : nullptr,
                   with_res ? res->typed_data<float>() : nullptr);
  } else if (type == ffi::DataType::F64) {
    Plan p = MakePlan(T_, B, H, cell, act, false);
    Forward<double>(p, zx.typed_data<double>(), w_h.typed_data<double>(),
                    cell == kGruAfter ? b_hn.typed_data<double>() : nullptr,
                    h0.typed_data<double>(), lstm ? c0.typed_data<double>() : nullptr,
                    mask.typed_data(), hs->typed_data<double>(),
                    lstm ? cs->typed_data<double>() : nullptr,
                    with_res ? res->typed_data<double>() : nullptr);
  } else {
    return ffi::Error::InvalidArgument("rnnjax cpu kernel: only float32 and float64");
  }
  return ffi::Error::Success();
}

ffi::Error BackwardImpl(ffi::AnyBuffer w_h, ffi::AnyBuffer b_hn, ffi::AnyBuffer h0,
                        ffi::AnyBuffer c0, ffi::Buffer<ffi::S32> mask, ffi::AnyBuffer hs,
                        ffi::AnyBuffer cs, ffi::AnyBuffer res, ffi::AnyBuffer dys,
                        ffi::AnyBuffer dhT, ffi::AnyBuffer dcT, ffi::Result<ffi::AnyBuffer> dzx,
                        ffi::Result<ffi::AnyBuffer> dzh, ffi::Result<ffi::AnyBuffer> dh0,
                        ffi::Result<ffi::AnyBuffer> dc0, int64_t cell, int64_t act) {
  (void)b_hn;
  if (auto e = CheckCell(cell, act); e.failure()) return e;
  auto hd = hs.dimensions();
  if (hd.size() != 3) return ffi::Error::InvalidArgument("rnnjax cpu kernel: hs must be [T, B, H]");
  const int64_t T_ = hd[0], B = hd[1], H = hd[2];
  const bool lstm = cell == kLstm, gru = cell == kGruAfter;
  auto type = hs.element_type();
  if (type == ffi::DataType::F32) {
    Plan p = MakePlan(T_, B, H, cell, act, true);
    Backward<float>(p, w_h.typed_data<float>(), h0.typed_data<float>(),
                    lstm ? c0.typed_data<float>() : nullptr, mask.typed_data(),
                    hs.typed_data<float>(), lstm ? cs.typed_data<float>() : nullptr,
                    res.typed_data<float>(), dys.typed_data<float>(), dhT.typed_data<float>(),
                    lstm ? dcT.typed_data<float>() : nullptr, dzx->typed_data<float>(),
                    gru ? dzh->typed_data<float>() : nullptr, dh0->typed_data<float>(),
                    lstm ? dc0->typed_data<float>() : nullptr);
  } else if (type == ffi::DataType::F64) {
    Plan p = MakePlan(T_, B, H, cell, act, false);
    Backward<double>(p, w_h.typed_data<double>(), h0.typed_data<double>(),
                     lstm ? c0.typed_data<double>() : nullptr, mask.typed_data(),
                     hs.typed_data<double>(), lstm ? cs.typed_data<double>() : nullptr,
                     res.typed_data<double>(), dys.typed_data<double>(),
                     dhT.typed_data<double>(), lstm ? dcT.typed_data<double>() : nullptr,
                     dzx->typed_data<double>(), gru ? dzh->typed_data<double>() : nullptr,
                     dh0->typed_data<double>(), lstm ? dc0->typed_data<double>() : nullptr);
  } else {
    return ffi::Error::InvalidArgument("rnnjax cpu kernel: only float32 and float64");
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxForward, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // zx [T, B, N]
                                  .Arg<ffi::AnyBuffer>()  // w_h [H, N]
                                  .Arg<ffi::AnyBuffer>()  // b_hn [H] (GRU) or [0]
                                  .Arg<ffi::AnyBuffer>()  // h0 [B, H]
                                  .Arg<ffi::AnyBuffer>()  // c0 [B, H] (LSTM) or [0]
                                  .Arg<ffi::Buffer<ffi::S32>>()  // mask [T, B]
                                  .Ret<ffi::AnyBuffer>()  // hs [T, B, H], held past a length
                                  .Ret<ffi::AnyBuffer>()  // cs [T, B, H] (LSTM) or [0]
                                  .Ret<ffi::AnyBuffer>()  // res [T, B, R·H] (keep) or [0]
                                  .Attr<int64_t>("cell")
                                  .Attr<int64_t>("act")
                                  .Attr<bool>("keep"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxBackward, BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // w_h
                                  .Arg<ffi::AnyBuffer>()  // b_hn
                                  .Arg<ffi::AnyBuffer>()  // h0
                                  .Arg<ffi::AnyBuffer>()  // c0
                                  .Arg<ffi::Buffer<ffi::S32>>()  // mask
                                  .Arg<ffi::AnyBuffer>()  // hs
                                  .Arg<ffi::AnyBuffer>()  // cs
                                  .Arg<ffi::AnyBuffer>()  // res
                                  .Arg<ffi::AnyBuffer>()  // dys [T, B, H]
                                  .Arg<ffi::AnyBuffer>()  // dhT [B, H]
                                  .Arg<ffi::AnyBuffer>()  // dcT [B, H] (LSTM) or [0]
                                  .Ret<ffi::AnyBuffer>()  // dzx [T, B, N]
                                  .Ret<ffi::AnyBuffer>()  // dzh [T, B, N] (GRU) or [0]
                                  .Ret<ffi::AnyBuffer>()  // dh0 [B, H]
                                  .Ret<ffi::AnyBuffer>()  // dc0 [B, H] (LSTM) or [0]
                                  .Attr<int64_t>("cell")
                                  .Attr<int64_t>("act"));

// ---------------------------------------------------------------- the Python module

static PyObject* Capsule(void* fn) { return PyCapsule_New(fn, nullptr, nullptr); }

static struct PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_rnn_cpu",
                                     "rnnjax's CPU kernel: XLA FFI handlers (PyCapsules).", -1,
                                     nullptr};

PyMODINIT_FUNC PyInit__rnn_cpu(void) {
  PyObject* m = PyModule_Create(&kModule);
  if (!m) return nullptr;
  PyModule_AddObject(m, "forward", Capsule(reinterpret_cast<void*>(RnnjaxForward)));
  PyModule_AddObject(m, "backward", Capsule(reinterpret_cast<void*>(RnnjaxBackward)));
  PyModule_AddIntConstant(m, "avx512", rnnjax_kernels::Avx512Supported() ? 1 : 0);
  return m;
}
