// mala: magnitude-aware linear attention, "Rectifying Magnitude Neglect in Linear Attention"
// (Fan et al., ICCV 2025, arXiv 2507.00698), in the form of the released code
// (spec/attention.md section 4). With phi = elu + 1 and s = Dh^-1/2 (or "scale"):
//
//   kbar = (1/N) sum_j phi(k_j),  KV = (s/N) sum_j phi(k_j) v_j^T,  vbar = (1/N) sum_j v_j
//   z_i  = s phi(q_i) . kbar
//   o_i  = (1 + 1/(z_i + eps)) phi(q_i)^T KV - z_i vbar
//
// Causal (spec's recommendation): N -> n_i = i + 1 and every sum runs over j <= i.
//
// The kernels keep the three running sums unscaled, in double (float32 prefix sums drift
// over long N):  Kp = sum phi(k_j) (Dh),  SV = sum phi(k_j) v_j^T (Dh x Dv),  Vs = sum v_j (Dv).
// Per row, with a_i = SV^T phi(q_i) (Dv) and c_i = phi(q_i) . Kp, and sn = s/n_i:
//
//   u_i = sn a_i,  z_i = sn c_i,  vbar = Vs / n_i
//   u_i / (z_i + eps) = a_i / den_i  with  den_i = c_i + eps n_i / s            (exact)
//   o_i = sn a_i + a_i / den_i - sn c_i Vs / n_i
//
// The ratio is formed as a normalised linear attention, num / den, as the spec's numerics note
// asks: when phi(q_i) is tiny, z_i and u_i are both O(|phi(q_i)|) and 1/z_i alone would blow
// up, while a_i / den_i stays a well-conditioned ratio. Memory is linear in N: the Dh x Dv
// state, and three scalars per row in backward; no N x N matrix.
#include <cmath>
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
// One (b, h): q, k [N, Dh], v [N, Dv] -> o [N, Dv]; s the scale, eps as in z_i + eps.
// Scratch (double): SV [Dh*Dv] (row-major), Kp [Dh], Vs [Dv], fq [Dh], fk [Dh], a [Dv].
void mala_forward_head(const float* q, const float* k, const float* v, float* o, int64_t N, int64_t Dh,
                       int64_t Dv, double s, double eps, bool causal, double* scratch) {
  double* SV = scratch;
  double* Kp = SV + Dh * Dv;
  double* Vs = Kp + Dh;
  double* fq = Vs + Dv;
  double* fk = fq + Dh;
  double* a = fk + Dh;
  std::memset(SV, 0, sizeof(double) * static_cast<size_t>(Dh * Dv + Dh + Dv));  // SV, Kp, Vs

  // Adds token j to the sums: SV += phi(k_j) v_j^T, Kp += phi(k_j), Vs += v_j.
  auto add_key = [&](int64_t j) { detail::add_key_to_state(k + j * Dh, v + j * Dv, Dh, Dv, fk, SV, Kp, Vs); };

  // Bidirectional: the sums over all N tokens first. Causal: advance the prefix by one token
  // just before row i, so row i sees j <= i and n_i = i + 1.
  detail::walk_state(N, causal, false, add_key, [&](int64_t i) {
    const double n = static_cast<double>(causal ? i + 1 : N);
    const double sn = s / n;
    elu1_row(q + i * Dh, fq, Dh);
    // a = SV^T phi(q_i) (Dv), c = phi(q_i) . Kp.
    const double c = detail::read_state(fq, SV, Kp, Dh, Dv, a, 0.0);
    const double den = c + eps * n / s;
    // o_i = (sn + 1/den) a - (sn c / n) Vs   (= w_i u_i - z_i vbar).
    const double alpha = sn + 1.0 / den;
    const double beta = sn * c / n;
    float* oi = o + i * Dv;
    for (int64_t e = 0; e < Dv; ++e) oi[e] = static_cast<float>(alpha * a[e] - beta * Vs[e]);
  });
}

// ---- backward ---------------------------------------------------------------------------
// In the kernel's variables (the spec's du, dz, dKV, dkbar, dvbar, regrouped; algebraically
// the same), with g_i = dO_i:
//   da_i  = alpha_i g_i,              alpha_i = sn + 1/den_i
//   dden_i = -(g_i . a_i) / den_i^2
//   dc_i  = dden_i - sn (g_i . Vs) / n_i          (den_i and z_i both move with c_i)
//   dVs_i = beta_i g_i,               beta_i = -sn c_i / n_i
//   dphi(q_i) = SV da_i + dc_i Kp
//   dphi(k_j) = R_j v_j + r_j,   dv_j = R_j^T phi(k_j) + p_j
// where, over the queries i that see key j (all, or i >= j when causal: reverse prefix sums),
//   R_j = sum_i phi(q_i) da_i^T,  r_j = sum_i dc_i phi(q_i),  p_j = sum_i dVs_i.
// g_i . a_i is phi(q_i) . t_i with t_i = SV g_i, which dphi(q_i) needs anyway.
//
// Pass A walks the queries forward with SV, Kp, Vs rebuilt from k, v exactly as in the
// forward; it writes dq and keeps three scalars per row for pass B: alpha[i], dc[i],
// beta[i] (da_i and dVs_i are those scalars times g_i, read again from dO). Pass B walks
// the keys backward with R, r, p and writes dk, dv.
// Scratch (double): SV [Dh*Dv], Kp [Dh], Vs [Dv], fq, fk, t [Dh], w [Dv], alpha, dc, beta [N].
// Pass B reuses SV, Kp, Vs as R, r, p.
void mala_backward_head(const float* q, const float* k, const float* v, const float* g, float* dq, float* dk,
                        float* dv, int64_t N, int64_t Dh, int64_t Dv, double s, double eps, bool causal,
                        double* scratch) {
  double* SV = scratch;
  double* Kp = SV + Dh * Dv;
  double* Vs = Kp + Dh;
  double* fq = Vs + Dv;
  double* fk = fq + Dh;
  double* t = fk + Dh;
  double* w = t + Dh;
  double* alpha = w + Dv;
  double* dc = alpha + N;
  double* beta = dc + N;

  // ---- pass A: queries in order with the (prefix) sums; dq.
  std::memset(SV, 0, sizeof(double) * static_cast<size_t>(Dh * Dv + Dh + Dv));
  auto add_key = [&](int64_t j) { detail::add_key_to_state(k + j * Dh, v + j * Dv, Dh, Dv, fk, SV, Kp, Vs); };
  detail::walk_state(N, causal, false, add_key, [&](int64_t i) {
    const double n = static_cast<double>(causal ? i + 1 : N);
    const double sn = s / n;
    const float* qi = q + i * Dh;
    const float* gi = g + i * Dv;
    elu1_row(qi, fq, Dh);
    // t = SV g_i (Dh), c = phi(q_i) . Kp, g.a = phi(q_i) . t.
    double g_a = 0.0;
    const double c = detail::read_state_grad(fq, SV, Kp, gi, Dh, Dv, t, 0.0, &g_a);
    double g_vs = 0.0;  // g_i . Vs
    for (int64_t e = 0; e < Dv; ++e) g_vs += gi[e] * Vs[e];
    const double den = c + eps * n / s;
    const double r_den = 1.0 / den;
    const double al = sn + r_den;
    // -(g.a)/den^2 as two multiplications by 1/den (den^2 alone can underflow when eps = 0).
    const double dden = -(g_a * r_den) * r_den;
    const double dci = dden - sn * g_vs / n;
    alpha[i] = al;
    dc[i] = dci;
    beta[i] = -sn * c / n;
    // dq = (SV da_i + dc_i Kp) o phi'(q_i), with SV da_i = alpha_i t.
    float* dqi = dq + i * Dh;
    for (int64_t d = 0; d < Dh; ++d) dqi[d] = static_cast<float>((al * t[d] + dci * Kp[d]) * elu1_grad(qi[d]));
  });

  // ---- pass B: keys in reverse order with R, r, p over the queries that see key j; dk, dv.
  double* R = SV;
  double* r = Kp;
  double* p = Vs;
  std::memset(R, 0, sizeof(double) * static_cast<size_t>(Dh * Dv + Dh + Dv));
  // R += phi(q_i) (alpha_i g_i)^T, r += dc_i phi(q_i), p += beta_i g_i; sums over i >= j (causal).
  auto add_query = [&](int64_t i) {
    const float* gi = g + i * Dv;
    detail::add_query_to_state(q + i * Dh, gi, alpha[i], dc[i], Dh, Dv, fq, R, r);
    for (int64_t e = 0; e < Dv; ++e) p[e] += beta[i] * gi[e];
  };
  detail::walk_state(N, causal, true, add_query, [&](int64_t j) {
    const float* kj = k + j * Dh;
    const float* vj = v + j * Dv;
    elu1_row(kj, fk, Dh);
    detail::key_grads(R, r, p, fk, kj, vj, Dh, Dv, w, dk + j * Dh, dv + j * Dv);  // dv_j (+ p), dk_j
  });
}

// The op's settings and its per-head kernels, for detail::HeadwiseOp; scratch
// sizes are in doubles per thread.
struct MalaKernel {
  double scale = 0.0;  // <= 0: Dh^-1/2
  double eps = 0.0;
  bool causal = false;
  double s(const HeadDims& d) const { return scale > 0.0 ? scale : 1.0 / std::sqrt(static_cast<double>(d.Dh)); }
  int64_t forward_scratch(const HeadDims& s) const { return s.Dh * s.Dv + 3 * s.Dh + 2 * s.Dv; }
  int64_t backward_scratch(const HeadDims& s) const { return s.Dh * s.Dv + 4 * s.Dh + 2 * s.Dv + 3 * s.N; }
  void forward(const float* q, const float* k, const float* v, float* o, const HeadDims& d, double* scratch) const {
    mala_forward_head(q, k, v, o, d.N, d.Dh, d.Dv, s(d), eps, causal, scratch);
  }
  void backward(const float* q, const float* k, const float* v, const float* g, float* dq, float* dk, float* dv,
                const HeadDims& d, double* scratch) const {
    mala_backward_head(q, k, v, g, dq, dk, dv, d.N, d.Dh, d.Dv, s(d), eps, causal, scratch);
  }
};

}  // namespace

AttentionEntry mala_attention_entry() {
  AttentionEntry e;
  e.name = "mala";
  e.help = "magnitude-aware linear attention, (1 + 1/z) phi(q)^T KV - z vbar, z = s phi(q).kbar, phi = elu+1 "
           "(Fan et al. 2025)";
  e.schema = {
      {.name = "eps", .type = ParamType::Float, .default_value = 1e-6, .min = 0.0, .help = "added to z in 1/(z + eps)"},
      {.name = "causal", .type = ParamType::Bool, .default_value = false,
       .help = "query i sees keys 0..i only (prefix means with n_i = i + 1)"},
      {.name = "scale", .type = ParamType::Float, .default_value = nullptr, .min = 0.0, .min_exclusive = true,
       .help = "s in z = s phi(q).kbar and KV = (s/N) sum phi(k)v^T; null means Dh^-1/2", .nullable = true},
  };
  e.factory = [](const json& p, const AttentionContext&) -> std::unique_ptr<Attention> {
    const double s = p["scale"].is_null() ? 0.0 : p["scale"].get<double>();
    return detail::headwise_attention(
        "mala_attention", MalaKernel{s, p["eps"].get<double>(), p["causal"].get<bool>()});
  };
  return e;
}

}  // namespace softlab
