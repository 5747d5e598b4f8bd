// The elementwise part of one step of the built-in cells, forward and backward,
// written once over a vector type V (a scalar float/double, or a 16-lane
// AVX-512 register in rnn_avx512.cc). The math is that of rnnjax/_src/cells/
// lstm.py, gru.py (reset="after") and elman.py; their docstrings carry the
// equations and the gate order, and tests/test_cpu_kernel.py holds the two equal.
//
// V provides: V::kWidth, V::load(const T*), store(T*, V), V::set1(T), + - *,
// sigmoid(V), tanh_(V), relu(V), relu_grad(V) (1 where > 0, else 0).
//
// Layouts (row-major, one batch row m at a time, units u .. u + kWidth):
//   zx, S   [B, G*H]  the projected inputs and the recurrent matmul h_{t-1} w_h
//   res     [B, R*H]  what the backward keeps (LSTM: i,f,g,o; GRU: r,z,n,hn)
//   h, c    [B, H]
#ifndef RNNJAX_RNN_CELLS_H_
#define RNNJAX_RNN_CELLS_H_

#include <cstdint>

namespace rnnjax_cells {

enum Cell : int64_t { kLstm = 0, kGruAfter = 1, kElman = 2 };
enum Act : int64_t { kTanh = 0, kRelu = 1, kSigmoid = 2, kLinear = 3 };

static inline int64_t Gates(int64_t cell) { return cell == kLstm ? 4 : cell == kGruAfter ? 3 : 1; }
static inline int64_t Residuals(int64_t cell) { return cell == kElman ? 0 : 4; }

// One row's forward over units [u0, u1): writes h_t (and c_t, residuals).
template <class V, class T>
inline void ForwardRow(int64_t cell, int64_t act, int64_t H, int64_t u0, int64_t u1,
                       const T* zx, const T* S, const T* bhn, const T* h_prev,
                       const T* c_prev, T* h, T* c, T* res) {
  const V one = V::set1(T(1));
  for (int64_t u = u0; u < u1; u += V::kWidth) {
    if (cell == kLstm) {
      V i = sigmoid(V::load(zx + u) + V::load(S + u));
      V f = sigmoid(V::load(zx + H + u) + V::load(S + H + u));
      V g = tanh_(V::load(zx + 2 * H + u) + V::load(S + 2 * H + u));
      V o = sigmoid(V::load(zx + 3 * H + u) + V::load(S + 3 * H + u));
      V cn = f * V::load(c_prev + u) + i * g;  // c_t = f ⊙ c_{t-1} + i ⊙ g
      store(c + u, cn);
      store(h + u, o * tanh_(cn));  // h_t = o ⊙ tanh(c_t)
      if (res) {
        store(res + u, i);
        store(res + H + u, f);
        store(res + 2 * H + u, g);
        store(res + 3 * H + u, o);
      }
    } else if (cell == kGruAfter) {
      V r = sigmoid(V::load(zx + u) + V::load(S + u));          // reset gate
      V z = sigmoid(V::load(zx + H + u) + V::load(S + H + u));  // update gate
      V hn = V::load(S + 2 * H + u) + V::load(bhn + u);         // h w_hn + b_hn
      V n = tanh_(V::load(zx + 2 * H + u) + r * hn);
      V hp = V::load(h_prev + u);
      store(h + u, z * hp + (one - z) * n);  // h_t = z ⊙ h_{t-1} + (1 − z) ⊙ n
      if (res) {
        store(res + u, r);
        store(res + H + u, z);
        store(res + 2 * H + u, n);
        store(res + 3 * H + u, hn);
      }
    } else {
      V a = V::load(zx + u) + V::load(S + u);
      V y = act == kTanh ? tanh_(a) : act == kRelu ? relu(a) : act == kSigmoid ? sigmoid(a) : a;
      store(h + u, y);
    }
  }
}

// One row's backward over units [u0, u1), given dh (∂L/∂h_t, the output's
// cotangent included) and dc (∂L/∂c_t from later steps, LSTM only):
// writes the pre-activations' gradients dzx (and dzh, GRU: the rows of
// dw_h = H_prevᵀ dZh), the direct part of dh_{t-1} (GRU: dh ⊙ z; else 0) into
// dh_prev, and dc_{t-1} into dc_prev.
template <class V, class T>
inline void BackwardRow(int64_t cell, int64_t act, int64_t H, int64_t u0, int64_t u1,
                        const T* dh, const T* dc, const T* h, const T* h_prev, const T* c,
                        const T* c_prev, const T* res, T* dzx, T* dzh, T* dh_prev,
                        T* dc_prev) {
  const V one = V::set1(T(1));
  for (int64_t u = u0; u < u1; u += V::kWidth) {
    V d = V::load(dh + u);
    if (cell == kLstm) {
      V i = V::load(res + u), f = V::load(res + H + u);
      V g = V::load(res + 2 * H + u), o = V::load(res + 3 * H + u);
      V tc = tanh_(V::load(c + u));
      V dout = d * tc * o * (one - o);                       // h = o tanh(c), σ'
      V dcn = V::load(dc + u) + d * o * (one - tc * tc);     // through tanh(c)
      store(dzx + u, dcn * g * i * (one - i));               // c = f c_prev + i g
      store(dzx + H + u, dcn * V::load(c_prev + u) * f * (one - f));
      store(dzx + 2 * H + u, dcn * i * (one - g * g));
      store(dzx + 3 * H + u, dout);
      store(dc_prev + u, dcn * f);                           // dc_{t-1} = dc ⊙ f
      store(dh_prev + u, V::set1(T(0)));
    } else if (cell == kGruAfter) {
      V r = V::load(res + u), z = V::load(res + H + u);
      V n = V::load(res + 2 * H + u), hn = V::load(res + 3 * H + u);
      V hp = V::load(h_prev + u);
      V dz = d * (hp - n) * z * (one - z);  // h = z h_prev + (1-z) n; σ'
      V dn = d * (one - z) * (one - n * n);  // through tanh
      V dr = dn * hn * r * (one - r);        // n_pre = .. + r ⊙ hn
      store(dzx + u, dr);
      store(dzx + H + u, dz);
      store(dzx + 2 * H + u, dn);
      store(dzh + u, dr);
      store(dzh + H + u, dz);
      store(dzh + 2 * H + u, dn * r);  // hn's gradient is dn ⊙ r
      store(dh_prev + u, d * z);
    } else {
      V y = V::load(h + u);
      V fp = act == kTanh      ? one - y * y
             : act == kRelu    ? relu_grad(y)
             : act == kSigmoid ? y * (one - y)
                               : one;
      store(dzx + u, d * fp);  // backprop through f
      store(dh_prev + u, V::set1(T(0)));
    }
  }
}

}  // namespace rnnjax_cells

#endif  // RNNJAX_RNN_CELLS_H_
