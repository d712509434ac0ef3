use world::labelers::calibration_groups;
use world::*;

#[test]
fn probe() {
    let w = World::generate(0, WorldSize::Default);
    let s = w.stats();
    println!("{}", serde_json::to_string(&s).unwrap());
    // Ideal responses score
    let mut low = 0;
    for p in w.prompts() {
        let j = judge(&p.meta, &p.meta.reference, true);
        if j.score < 0.95 {
            low += 1;
            if low < 15 {
                println!("LOW {:.3} {:?} {} -> {} {:?}", j.score, p.meta.subtype, p.text, p.meta.reference, j.axes);
            }
        }
    }
    println!("low ideals: {low}/{}", w.prompts().len());
    let groups = calibration_groups(&w, 400, 1);
    for g in groups.iter().take(6) {
        println!("\n== {}", g.meta.prompt);
        for r in &g.responses {
            let j = judge(&g.meta, &r.text, r.ended_with_eos);
            println!("  {:.3} eos={} {:?}", j.score, r.ended_with_eos, r.text);
        }
    }
    for scale in [0.5, 1.0, 1.5, 2.0] {
        let pool = Pool::with_noise_scale(7, 10, 5, scale);
        let tr: Vec<&Labeler> = pool.train.iter().collect();
        let ho: Vec<&Labeler> = pool.heldout.iter().collect();
        let a = agreement(&tr, &groups);
        let b = agreement(&ho, &groups);
        println!("scale {scale}: train {:.3} ± {:.3} ties {:.3} | heldout {:.3} ± {:.3} ties {:.3}", a.agreement, a.std_over_pairs, a.tie_rate, b.agreement, b.std_over_pairs, b.tie_rate);
    }
    // exact ties by gold judge among distinct responses
    let mut pairs = 0; let mut ties = 0;
    for g in &groups {
        let js: Vec<f64> = g.responses.iter().map(|r| judge(&g.meta, &r.text, r.ended_with_eos).score).collect();
        for i in 0..js.len() { for j in i+1..js.len() { if g.responses[i] != g.responses[j] { pairs += 1; if js[i] == js[j] { ties += 1; } } } }
    }
    println!("gold exact ties {ties}/{pairs}");
}

#[test]
fn doc_lengths() {
    let w = World::generate(0, WorldSize::Default);
    let mut m = std::collections::BTreeMap::new();
    for d in w.pretrain_docs() {
        let e = m.entry(d.kind.name()).or_insert((0usize, 0usize));
        e.0 += 1;
        e.1 += d.text.split_whitespace().count();
    }
    for (k, (n, ws)) in m {
        println!("{k}: {n} docs, {:.1} words/doc", ws as f64 / n as f64);
    }
}
