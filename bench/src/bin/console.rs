//! `cove-console-bench`: how long the console takes to draw a VPC, by VPC
//! size (the worlds of `cove-reach-bench`): the resource map alone
//! (layout and SVG) and the whole VPC page (map, ENIs, security groups,
//! ACLs and route tables), with the page's size. Each figure is the median
//! and p99 of 200 renders; a page is rendered again on every store change
//! while someone watches it.

#[path = "../worlds.rs"]
mod worlds;

use std::time::Instant;

// why: p is a fraction in 0..=1, so the index (rounded down) lies in
// 0..sorted.len().
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).floor() as usize]
}

/// One way of drawing the VPC; answers the HTML's length.
type Render<'w> = Box<dyn Fn() -> usize + 'w>;

fn time(mut f: impl FnMut() -> usize) -> (f64, f64, usize) {
    let mut times = Vec::with_capacity(200);
    let mut size = 0;
    for _ in 0..200 {
        let t = Instant::now();
        size = std::hint::black_box(f());
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    (percentile(&times, 0.5), percentile(&times, 0.99), size)
}

fn main() {
    println!(
        "{:>6} {:<18} {:>12} {:>10} {:>10}",
        "ENIs", "what", "median ms", "p99 ms", "KiB"
    );
    for size in [10usize, 100, 1000] {
        let w = worlds::dense_vpc(size);
        let vpc = cove_model::fixtures::vpc_id(&w);
        let rows: [(&str, Render); 2] = [
            (
                "resource map",
                Box::new(|| {
                    let layout = cove_console::map::layout(&w, &vpc).expect("the VPC");
                    cove_console::map::render(&layout, &Default::default()).len()
                }),
            ),
            (
                "whole VPC page",
                Box::new(|| {
                    cove_console::vpc_page_body(&w, &vpc)
                        .expect("the VPC")
                        .len()
                }),
            ),
        ];
        for (what, f) in rows {
            let (median, p99, bytes) = time(f);
            println!(
                "{size:>6} {what:<18} {median:>12.3} {p99:>10.3} {:>10.1}",
                bytes as f64 / 1024.0
            );
        }
    }
}
