// linear: "Transformers are RNNs" (Katharopoulos et al. 2020, arXiv 2006.16236), with the
// feature map phi = elu + 1 and no 1/sqrt(Dh) scale (spec/attention.md section 3):
//
//   bidirectional:  S = sum_j phi(k_j) v_j^T  (Dh x Dv),  z = sum_j phi(k_j)  (Dh)
//   causal:         S_i, z_i = the same sums over j <= i
//   o_i = phi(q_i)^T S / (phi(q_i) . z + eps)
//
// One fused op with a hand-written backward. Memory is linear in N: per (b, h) the kernels
// keep only the Dh x Dv state (and, in backward, two scalars per row); no N x N matrix is
// ever formed. Every sum over tokens is accumulated in double (float32 prefix sums drift
// over long N; spec section 0), and so is every per-row product, so the float32 result is
// the double-precision value rounded once.
#include <cstring>
#include <memory>

#include "attention/headwise_kernel.hpp"
#include "softlab/attention.hpp"

namespace softlab {

namespace {

using detail::elu1_grad;
using detail::elu1_row;
using detail::HeadDims;

// ---- forward ----------------------------------------------------------------------------
// One (b, h): q, k [N, Dh], v [N, Dv] -> o [N, Dv].
// Scratch (double): S [Dh*Dv] (row-major, S[d*Dv + e]), z [Dh], fq [Dh], fk [Dh], num [Dv].
void linear_forward_head(const float* q, const float* k, const float* v, float* o, int64_t N, int64_t Dh,
                         int64_t Dv, double eps, bool causal, double* scratch) {
  double* S = scratch;
  double* z = S + Dh * Dv;
  double* fq = z + Dh;
  double* fk = fq + Dh;
  double* num = fk + Dh;
  std::memset(S, 0, sizeof(double) * static_cast<size_t>(Dh * Dv + Dh));  // S and z

  // Adds token j to the state: S += phi(k_j) v_j^T, z += phi(k_j).
  auto add_key = [&](int64_t j) { detail::add_key_to_state(k + j * Dh, v + j * Dv, Dh, Dv, fk, S, z, nullptr); };

  // Bidirectional: every query sees the full sums. Causal: query i sees the prefix up to i.
  detail::walk_state(N, causal, false, add_key, [&](int64_t i) {
    elu1_row(q + i * Dh, fq, Dh);
    // num = phi(q_i)^T S (Dv), den = phi(q_i) . z + eps (> 0 since phi > 0).
    const double inv_den = 1.0 / detail::read_state(fq, S, z, Dh, Dv, num, eps);
    float* oi = o + i * Dv;
    for (int64_t e = 0; e < Dv; ++e) oi[e] = static_cast<float>(num[e] * inv_den);
  });
}

// ---- backward ---------------------------------------------------------------------------
// With den_i = phi(q_i).z_i + eps, num_i = phi(q_i)^T S_i and g_i = dO_i:
//   dnum_i = g_i / den_i,   dden_i = -(g_i . num_i) / den_i^2
//   dphi(q_i) = S_i dnum_i + dden_i z_i
//   dphi(k_j) = R_j v_j + r_j,  dv_j = R_j^T phi(k_j)
// where R_j = sum_i phi(q_i) dnum_i^T and r_j = sum_i dden_i phi(q_i) run over the queries
// that see key j (all of them, or i >= j when causal: reverse prefix sums).
// g_i . num_i is computed as phi(q_i) . t_i with t_i = S_i g_i, the vector dphi(q_i) needs
// anyway, so num_i is never recomputed.
//
// Pass A walks the queries forward with the (prefix) state S, z rebuilt from k, v, exactly
// as the forward built it; it writes dq and keeps two scalars per row for pass B:
// inv_den[i] = 1/den_i and dden[i]. Pass B walks the keys backward with R, r.
// Scratch (double): S [Dh*Dv], z [Dh], fq, fk, t [Dh], inv_den [N], dden [N], w [Dv]; pass B
// reuses S and z as R and r.
void linear_backward_head(const float* q, const float* k, const float* v, const float* g, float* dq, float* dk,
                          float* dv, int64_t N, int64_t Dh, int64_t Dv, double eps, bool causal, double* scratch) {
  double* S = scratch;
  double* z = S + Dh * Dv;
  double* fq = z + Dh;
  double* fk = fq + Dh;
  double* t = fk + Dh;
  double* inv_den = t + Dh;
  double* dden = inv_den + N;
  double* w = dden + N;

  // ---- pass A: queries in order, state S, z as in the forward; dq.
  std::memset(S, 0, sizeof(double) * static_cast<size_t>(Dh * Dv + Dh));
  auto add_key = [&](int64_t j) { detail::add_key_to_state(k + j * Dh, v + j * Dv, Dh, Dv, fk, S, z, nullptr); };
  detail::walk_state(N, causal, false, add_key, [&](int64_t i) {
    const float* qi = q + i * Dh;
    const float* gi = g + i * Dv;
    elu1_row(qi, fq, Dh);
    // t = S g_i (Dh); den = phi(q_i).z + eps; g_i . num_i = phi(q_i) . t.
    double g_num = 0.0;
    const double den = detail::read_state_grad(fq, S, z, gi, Dh, Dv, t, eps, &g_num);
    const double r_den = 1.0 / den;
    // -(g.num)/den^2 as two multiplications by 1/den: den^2 alone could underflow when
    // eps = 0 and phi(q_i) is tiny, although the ratio is fine.
    const double dd = -(g_num * r_den) * r_den;
    inv_den[i] = r_den;
    dden[i] = dd;
    // dq = (S dnum_i + dden_i z) o phi'(q_i), with S dnum_i = t / den_i.
    float* dqi = dq + i * Dh;
    for (int64_t d = 0; d < Dh; ++d) dqi[d] = static_cast<float>((t[d] * r_den + dd * z[d]) * elu1_grad(qi[d]));
  });

  // ---- pass B: keys in reverse order, R = sum phi(q_i) dnum_i^T and r = sum dden_i phi(q_i)
  // over the queries that see key j; dk and dv.
  double* R = S;
  double* r = z;
  std::memset(R, 0, sizeof(double) * static_cast<size_t>(Dh * Dv + Dh));
  // R += phi(q_i) (g_i / den_i)^T, r += dden_i phi(q_i); R_j sums over the i >= j (causal).
  auto add_query = [&](int64_t i) {
    detail::add_query_to_state(q + i * Dh, g + i * Dv, inv_den[i], dden[i], Dh, Dv, fq, R, r);
  };
  detail::walk_state(N, causal, true, add_query, [&](int64_t j) {
    const float* kj = k + j * Dh;
    const float* vj = v + j * Dv;
    elu1_row(kj, fk, Dh);
    detail::key_grads(R, r, nullptr, fk, kj, vj, Dh, Dv, w, dk + j * Dh, dv + j * Dv);  // dv_j, dk_j
  });
}

// The op's settings and its per-head kernels, for detail::HeadwiseOp; scratch
// sizes are in doubles per thread.
struct LinearKernel {
  double eps = 0.0;
  bool causal = false;
  int64_t forward_scratch(const HeadDims& s) const { return s.Dh * s.Dv + 3 * s.Dh + s.Dv; }
  int64_t backward_scratch(const HeadDims& s) const { return s.Dh * s.Dv + 4 * s.Dh + 2 * s.N + s.Dv; }
  void forward(const float* q, const float* k, const float* v, float* o, const HeadDims& d, double* scratch) const {
    linear_forward_head(q, k, v, o, d.N, d.Dh, d.Dv, eps, causal, scratch);
  }
  void backward(const float* q, const float* k, const float* v, const float* g, float* dq, float* dk, float* dv,
                const HeadDims& d, double* scratch) const {
    linear_backward_head(q, k, v, g, dq, dk, dv, d.N, d.Dh, d.Dv, eps, causal, scratch);
  }
};

}  // namespace

AttentionEntry linear_attention_entry() {
  AttentionEntry e;
  e.name = "linear";
  e.help = "linear attention, phi(q)^T sum phi(k)v^T / (phi(q).sum phi(k) + eps), phi = elu+1 "
           "(Katharopoulos et al. 2020)";
  e.schema = {
      {.name = "eps", .type = ParamType::Float, .default_value = 1e-6, .min = 0.0,
       .help = "added to the denominator phi(q).sum phi(k)"},
      {.name = "causal", .type = ParamType::Bool, .default_value = false, .help = "query i sees keys 0..i only"},
  };
  e.factory = [](const json& p, const AttentionContext&) -> std::unique_ptr<Attention> {
    return detail::headwise_attention(
        "linear_attention", LinearKernel{p["eps"].get<double>(), p["causal"].get<bool>()});
  };
  return e;
}

}  // namespace softlab
