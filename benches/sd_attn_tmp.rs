use criterion::{criterion_group, criterion_main, Criterion};
use svgen::train::burn::backend::Flex;
use svgen::train::burn::tensor::{activation, module::attention, ops::AttentionModuleOptions, Distribution, Tensor};
type B = Flex;
fn manual(q: Tensor<B,4>, k: Tensor<B,4>, v: Tensor<B,4>) -> Tensor<B,4> {
    let d = q.dims()[3];
    let s = q.mul_scalar(1.0 / (d as f64).sqrt()).matmul(k.swap_dims(2, 3));
    activation::softmax(s, 3).matmul(v)
}
fn bench(c: &mut Criterion) {
    let dev = Default::default();
    let mut g = c.benchmark_group("attn");
    g.sample_size(10);
    for (n, t, d) in [(1024usize, 1024usize, 8usize), (1024, 77, 8), (1024, 1024, 40), (4096, 4096, 40)] {
        let q = Tensor::<B,4>::random([2, 8, n, d], Distribution::Normal(0.,1.), &dev);
        let k = Tensor::<B,4>::random([2, 8, t, d], Distribution::Normal(0.,1.), &dev);
        let v = Tensor::<B,4>::random([2, 8, t, d], Distribution::Normal(0.,1.), &dev);
        let o = AttentionModuleOptions { scale: None, softcap: None, is_causal: false };
        g.bench_function(format!("flex_{n}_{t}_{d}"), |b| b.iter(|| attention(q.clone(), k.clone(), v.clone(), None, None, o).into_data()));
        g.bench_function(format!("manual_{n}_{t}_{d}"), |b| b.iter(|| manual(q.clone(), k.clone(), v.clone()).into_data()));
        let x = Tensor::<B,4>::random([2, 8, n, t], Distribution::Normal(0.,1.), &dev);
        g.bench_function(format!("exp_{n}_{t}"), |b| b.iter(|| x.clone().exp().into_data()));
        g.bench_function(format!("softmax_{n}_{t}"), |b| b.iter(|| activation::softmax(x.clone(), 3).into_data()));
    }
}
criterion_group!(benches, bench);
criterion_main!(benches);
