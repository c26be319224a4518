//! Criterion benchmarks of freshen's pure core: base resolution over 10,000
//! Dockerfiles, and graph plus planning over 10,000 builds.
//! Run: `cargo bench --bench core`.

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use freshen::dockerfile::{resolve, ResolveInput};
use freshen::graph::{BuildGraph, Node};
use freshen::reference::ImageRef;

/// 10,000 Dockerfiles in the shapes people write: ARG-parameterised bases,
/// multi-stage builds with stage aliases, COPY --from, heredocs.
fn dockerfiles(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 4 {
            0 => format!("ARG VERSION={i}\nARG REG=registry.example.com\nFROM ${{REG}}/team/base-{}:${{VERSION:-1}}\nRUN echo {i}\n", i % 97),
            1 => format!(
                "FROM golang:1.22 AS build\nWORKDIR /src\nCOPY . .\nRUN go build -o /app-{i}\nFROM build AS test\nRUN go test ./...\nFROM gcr.io/distroless/static:nonroot\nCOPY --from=build /app-{i} /app\n"
            ),
            2 => format!("# syntax=docker/dockerfile:1\nFROM node:20-alpine AS deps\nRUN <<EOF\nnpm ci\nFROM not-an-instruction\nEOF\nFROM deps AS build\nRUN npm run build-{i}\nFROM nginx:1.27\nCOPY --from=build /dist /usr/share/nginx/html\n"),
            _ => format!("FROM localhost:5000/lib-{}:latest\nCOPY . /app\nCMD [\"/app/run\", \"{i}\"]\n", i % 500),
        })
        .collect()
}

fn bench_resolve(c: &mut Criterion) {
    let files = dockerfiles(10_000);
    let args = HashMap::new();
    let input = ResolveInput { build_args: Some(&args), engine_platform: Some("linux/amd64"), ..Default::default() };
    let mut g = c.benchmark_group("resolve");
    g.throughput(Throughput::Elements(files.len() as u64));
    g.sample_size(10);
    g.bench_function("10k dockerfiles", |b| b.iter(|| files.iter().filter(|f| resolve(f, &input).is_ok()).count()));
    g.finish();
}

fn bench_graph(c: &mut Criterion) {
    // A random-looking DAG: build i's base is a tag of an earlier build, or external.
    let nodes: Vec<Node> = (0..10_000usize)
        .map(|i| {
            let base = if i < 100 || i % 7 == 0 { format!("debian:{}", i % 13) } else { format!("r.example/b{}:1", (i * 7919) % i) };
            Node {
                name: format!("b{i}"),
                tags: vec![ImageRef::parse(&format!("r.example/b{i}:1")).unwrap()],
                uses: vec![ImageRef::parse(&base).unwrap()],
            }
        })
        .collect();
    let mut g = c.benchmark_group("graph");
    g.sample_size(10);
    g.bench_function("10k builds: edges, cycle check, order, descendants", |b| {
        b.iter(|| {
            let graph = BuildGraph::new(&nodes).unwrap();
            (graph.order().len(), graph.with_descendants(["b3", "b11"]).len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_resolve, bench_graph);
criterion_main!(benches);
