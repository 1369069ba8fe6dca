//! Criterion benchmarks of permsync's pure core: `can()` on 100,000 users next to
//! casbin's RBAC-with-domains enforcer loaded with the same data and asked the same
//! questions, building a 500-permission snapshot, and applying changes (one grant,
//! and a role edit that touches 1,000 bound users).
//!
//! Before anything is timed, permsync's answer to every question is checked against
//! the generator's reference answer, and so is casbin's to every question casbin is
//! timed on, so neither side can look faster by answering differently.
//!
//! `PERMSYNC_BENCH_SMALL=1` swaps in the small data set for a quick smoke run; the
//! published figures use the standard one.

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use casbin::function_map::key_match;
use casbin::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use permsync_bench::{Config, Dataset, Question, HEAVY_EFFECTIVE, NOW, WIDE_ROLE};
use permsync_core::{Change, ChangeKind, Grant, Index, Permission, Scope};

/// Questions timed against permsync; a multiple of 20 keeps the generator's exact
/// mix (half allowed, 70 % scoped).
const QUESTIONS: usize = 4_000;
/// The prefix of those also asked of casbin: one whole 20-question pattern (10
/// allowed, 10 denied, 14 scoped, 6 global). Small because casbin scans every policy
/// line per question, which takes about a second at the standard size.
const CASBIN_QUESTIONS: usize = 20;
const QUESTION_SEED: u64 = 0x5eed;

/// RBAC with domains, after casbin's `rbac_with_pattern_domain` example: the
/// permission is a single object matched by `keyMatch` (so `invoice:*` works), and
/// domains are path patterns (so `org/1/*` covers `org/1/` and `org/1/project/2/`,
/// and `*` covers everything). `p.kind` tells a user's direct grant from a role's
/// permission so that only role lines call `g()`; with domain patterns `g()` visits
/// every domain, and calling it for the million direct-grant lines of other users
/// made casbin about five times slower in our runs. The cheap `keyMatch` tests come first because
/// `&&` short-circuits. This is the fastest faithful setup we found for casbin.
const CASBIN_MODEL: &str = r#"
[request_definition]
r = sub, dom, obj

[policy_definition]
p = sub, dom, obj, kind

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = keyMatch(r.obj, p.obj) && keyMatch(r.dom, p.dom) && ((p.kind == "user" && r.sub == p.sub) || (p.kind == "role" && g(r.sub, p.sub, r.dom)))
"#;

/// The domain a question is asked in. The trailing `/` lets the holding pattern
/// `org/1/*` match `org/1/` itself and everything below it, but not `org/10/`.
/// Scopes always contain `/`, so `global` cannot collide with one.
fn casbin_request_domain(scope: Option<&str>) -> String {
    scope.map_or_else(|| "global".to_string(), |s| format!("{s}/"))
}

/// The domain pattern of a holding: `*` (everywhere, `global` included) for a global
/// one, `scope/*` for a scoped one.
fn casbin_holding_domain(scope: Option<&Scope>) -> String {
    scope.map_or_else(|| "*".to_string(), |s| format!("{}/*", s.as_str()))
}

/// The same data as policy lines: a role's permissions apply in every domain (`*`)
/// and its binding's `g` line carries the scope; a direct grant is a `user` line of
/// the user itself, with the grant's scope.
fn casbin_policy(data: &Dataset) -> String {
    let mut out = String::new();
    for r in &data.roles {
        for p in &r.permissions {
            out.push_str(&format!(
                "p, {}, *, {}, role\n",
                r.name.as_str(),
                p.as_str()
            ));
        }
    }
    for u in data.all_users() {
        for (p, s) in &u.grants {
            let dom = casbin_holding_domain(s.as_ref());
            out.push_str(&format!(
                "p, {}, {dom}, {}, user\n",
                u.id.as_str(),
                p.as_str()
            ));
        }
    }
    for u in data.all_users() {
        for (r, s) in &u.bindings {
            let dom = casbin_holding_domain(s.as_ref());
            out.push_str(&format!(
                "g, {}, {}, {dom}\n",
                u.id.as_str(),
                data.roles[*r].name.as_str()
            ));
        }
    }
    out
}

fn casbin_enforcer(data: &Dataset) -> Enforcer {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let model = DefaultModel::from_str(CASBIN_MODEL).await.unwrap();
        let enforcer = Enforcer::new(model, StringAdapter::new(casbin_policy(data)))
            .await
            .unwrap();
        // Set after loading, as casbin's own pattern-domain test does: set before,
        // every new domain would copy the links of every domain it matches.
        enforcer
            .get_role_manager()
            .write()
            .matching_fn(None, Some(key_match));
        enforcer
    })
}

fn casbin_can(e: &Enforcer, q: &Question) -> bool {
    let dom = casbin_request_domain(q.scope.as_deref());
    e.enforce((q.user.as_str(), dom.as_str(), q.permission.as_str()))
        .unwrap()
}

struct Fixture {
    data: Dataset,
    index: Index,
    questions: Vec<Question>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let config = if std::env::var_os("PERMSYNC_BENCH_SMALL").is_some() { Config::small() } else { Config::standard() };
        let started = Instant::now();
        let data = Dataset::generate(config);
        let index = data.index();
        let questions = data.questions(QUESTIONS, QUESTION_SEED);
        for q in &questions {
            assert_eq!(index.can(&q.user, &q.permission, q.scope.as_deref(), NOW), q.allowed, "{q:?}");
        }
        eprintln!(
            "data: {} users, {} grants, {} roles, {} bindings; {} questions agree with the reference ({:.1?})",
            data.users.len() + 1,
            data.grant_count(),
            data.roles.len(),
            data.binding_count(),
            questions.len(),
            started.elapsed()
        );
        Fixture { data, index, questions }
    })
}

/// Times `per_iter` calls per iteration and reports the time of one call.
fn per_call(iters: u64, per_iter: usize, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed() / per_iter as u32
}

fn ask_all(index: &Index, questions: &[Question]) {
    for q in questions {
        black_box(index.can(
            black_box(&q.user),
            black_box(&q.permission),
            black_box(q.scope.as_deref()),
            NOW,
        ));
    }
}

fn bench_can(c: &mut Criterion) {
    let fx = fixture();
    let mut group = c.benchmark_group("can");
    group.bench_function(format!("permsync/{QUESTIONS}_mixed"), |b| {
        b.iter_custom(|iters| {
            per_call(iters, fx.questions.len(), || {
                ask_all(&fx.index, &fx.questions)
            })
        })
    });
    // Shorter prefixes of the same questions touch fewer distinct users, so their
    // data stays in cache; together with the full set they show how much of a call
    // is waiting for memory rather than computing.
    for n in [200, 1_600] {
        let prefix = &fx.questions[..n];
        group.bench_function(format!("permsync/first_{n}"), |b| {
            b.iter_custom(|iters| per_call(iters, prefix.len(), || ask_all(&fx.index, prefix)))
        });
    }
    group.finish();

    compare_with_casbin(
        c,
        "can_vs_casbin",
        &fx.data,
        &fx.index,
        &fx.questions[..CASBIN_QUESTIONS],
    );

    // The same comparison on 2,000 users: casbin's work per question grows with its
    // policy lines, permsync's only with the user's own holdings, and the two sizes
    // together show it.
    let small = Dataset::generate(Config::small());
    let small_index = small.index();
    let small_questions = small.questions(CASBIN_QUESTIONS, QUESTION_SEED);
    compare_with_casbin(
        c,
        "can_vs_casbin_2k_users",
        &small,
        &small_index,
        &small_questions,
    );
}

/// Loads casbin with `data`, asserts that casbin, permsync and the reference agree on
/// every one of `questions`, then times both on exactly those questions.
fn compare_with_casbin(
    c: &mut Criterion,
    name: &str,
    data: &Dataset,
    index: &Index,
    questions: &[Question],
) {
    let started = Instant::now();
    let enforcer = casbin_enforcer(data);
    let loaded = started.elapsed();
    let started = Instant::now();
    for q in questions {
        assert_eq!(
            index.can(&q.user, &q.permission, q.scope.as_deref(), NOW),
            q.allowed,
            "permsync: {q:?}"
        );
        assert_eq!(
            casbin_can(&enforcer, q),
            q.allowed,
            "casbin and permsync disagree on {q:?}"
        );
    }
    eprintln!(
        "{name}: casbin loaded {} policy lines in {loaded:.1?}; all {} questions agree ({} allowed); \
         casbin's mean while checking: {:.1?} per question",
        enforcer.get_policy().len() + enforcer.get_grouping_policy().len(),
        questions.len(),
        questions.iter().filter(|q| q.allowed).count(),
        started.elapsed() / questions.len() as u32
    );

    let mut group = c.benchmark_group(name);
    // A casbin call can take about a second, so criterion's usual growing samples
    // would run for many minutes. Flat one-call samples, one per question, still
    // give a median over the whole set.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(questions.len())
        .warm_up_time(Duration::from_millis(1));
    group.bench_function("permsync", |b| {
        b.iter_custom(|iters| per_call(iters, questions.len(), || ask_all(index, questions)))
    });
    // Each iteration asks the next question, so the samples cover the whole set.
    let mut next = 0;
    group.bench_function("casbin", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(casbin_can(&enforcer, &questions[next % questions.len()]));
                next += 1;
            }
            start.elapsed()
        })
    });
    group.finish();
}

fn bench_snapshot(c: &mut Criterion) {
    let fx = fixture();
    let heavy = &fx.data.heavy.id;
    let snapshot = fx.index.snapshot(heavy, NOW);
    assert_eq!(snapshot.permissions.len(), HEAVY_EFFECTIVE);
    let mut group = c.benchmark_group("snapshot");
    group.bench_function(format!("user_with_{HEAVY_EFFECTIVE}_permissions"), |b| {
        b.iter(|| fx.index.snapshot(black_box(heavy), NOW))
    });
    group.finish();
}

fn change(seq: u64, kind: ChangeKind) -> Change {
    Change {
        seq,
        at: NOW,
        actor: "bench".to_string(),
        kind,
    }
}

fn bench_apply(c: &mut Criterion) {
    let fx = fixture();
    // A separate index: these benchmarks mutate it.
    let mut index = fx.data.index();
    let mut seq = fx.data.last_seq();
    let users = &fx.data.users;
    let permission = Permission::parse("invoice:approve").unwrap();
    let mut group = c.benchmark_group("apply");

    group.bench_function("grant_added", |b| {
        b.iter_custom(|iters| {
            // Built up front so that only `apply` is timed.
            let added: Vec<Change> = (0..iters as usize)
                .map(|i| {
                    seq += 1;
                    let u = &users[i % users.len()];
                    change(
                        seq,
                        ChangeKind::GrantAdded(Grant {
                            id: seq,
                            user: u.id.clone(),
                            permission: permission.clone(),
                            scope: Some(Scope::parse(&format!("org/{}", u.home_org)).unwrap()),
                            expires_at: None,
                            created_at: NOW,
                            created_by: "bench".to_string(),
                        }),
                    )
                })
                .collect();
            let start = Instant::now();
            for ch in &added {
                black_box(index.apply(ch));
            }
            let elapsed = start.elapsed();
            // Undone untimed, so users keep their generated number of grants.
            for ch in &added {
                let ChangeKind::GrantAdded(g) = &ch.kind else {
                    unreachable!()
                };
                seq += 1;
                let removed = ChangeKind::GrantRemoved {
                    user: g.user.clone(),
                    id: g.id,
                    permission: g.permission.clone(),
                    scope: g.scope.clone(),
                    expired: false,
                };
                index.apply(&change(seq, removed));
            }
            elapsed
        })
    });

    let wide = fx.data.wide_role();
    let members = fx.data.config.wide_role_members;
    // Alternate between the role's permissions and a variant of them, so every edit
    // really changes the role.
    let variants = [wide.permissions.clone(), {
        let mut v = wide.permissions.clone();
        v[0] = Permission::parse("wiki:archive:*").unwrap();
        v
    }];
    seq += 1;
    let first = ChangeKind::RoleSet {
        role: wide.name.clone(),
        permissions: variants[1].clone(),
        description: String::new(),
    };
    assert_eq!(
        index.apply(&change(seq, first)).len(),
        members,
        "{WIDE_ROLE} must be bound to {members} users"
    );
    group.bench_function(format!("role_set_touching_{members}_users"), |b| {
        b.iter_custom(|iters| {
            let edits: Vec<Change> = (0..iters as usize)
                .map(|i| {
                    seq += 1;
                    let kind = ChangeKind::RoleSet {
                        role: wide.name.clone(),
                        permissions: variants[i % 2].clone(),
                        description: String::new(),
                    };
                    change(seq, kind)
                })
                .collect();
            let start = Instant::now();
            for ch in &edits {
                black_box(index.apply(ch));
            }
            start.elapsed()
        })
    });
    group.finish();
}

fn config() -> Criterion {
    // Shorter than criterion's defaults so the whole run, casbin included, stays
    // within a few minutes on a two-core machine.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_can, bench_snapshot, bench_apply
}
criterion_main!(benches);
