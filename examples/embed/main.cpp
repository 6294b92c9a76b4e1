// Fits y = 2x - 1 with a one-unit linear layer and plain gradient descent, using only
// softlab's public headers: the smallest program an embedding user would write.
#include <cstdio>

#include <softlab/softlab.hpp>

int main() {
  using namespace softlab;
  Generator gen(0);
  Tensor x = uniform({64, 1}, gen, -1.0f, 1.0f);
  Tensor y = add_scalar(scale(x, 2.0f), -1.0f);
  Tensor w = zeros({1, 1}).set_requires_grad(true);
  Tensor b = zeros({1}).set_requires_grad(true);
  float first = 0.0f, last = 0.0f;
  for (int step = 0; step < 200; ++step) {
    Tensor d = sub(linear(x, w, b), y);
    Tensor loss = mean(mul(d, d));
    loss.backward();
    if (step == 0) first = loss.item();
    last = loss.item();
    NoGradGuard no_grad;
    for (Tensor* p : {&w, &b}) {
      float* v = p->mutable_data();
      const float* g = p->grad().data();
      for (int64_t i = 0; i < p->numel(); ++i) v[i] -= 0.1f * g[i];
      p->zero_grad();
    }
  }
  std::printf("softlab %s: loss %.6f -> %.6f (w = %.4f, b = %.4f)\n", version().c_str(), first, last,
              w.item(), b.item());
  if (!(last < 1e-3f && last < first)) return 1;
  std::printf("loss fell\n");
  return 0;
}
