//! Deterministic benchmark data for permsync: users with direct grants and role
//! bindings at hierarchical scopes, plus a fixed set of `can()` questions labelled by
//! a deliberately naive reference evaluator of the model in PROTOCOL.md §1.
//!
//! The same seed always yields the same data and questions on every machine and
//! toolchain, so figures from different runs, and from permsync and its peers in one
//! run, are about the same workload. The reference evaluator shares no code with
//! `permsync_core::Index`, so a benchmark that asserts agreement with it is also a
//! correctness check of what it times.

use std::collections::HashSet;

use permsync_core::{Binding, Grant, Index, Permission, RoleName, Scope, Timestamp, UserId};

/// When every generated grant and binding was created.
pub const CREATED_AT: Timestamp = Timestamp(1_700_000_000_000);
/// The `now` at which questions are asked; nothing generated expires.
pub const NOW: Timestamp = Timestamp(1_800_000_000_000);
/// A role bound to [`Config::wide_role_members`] users, so that editing it touches
/// that many users (the push path's worst ordinary case).
pub const WIDE_ROLE: &str = "wide";
/// A user whose snapshot holds exactly [`HEAVY_EFFECTIVE`] effective permissions.
pub const HEAVY_USER: &str = "heavy";
pub const HEAVY_EFFECTIVE: usize = 500;
/// How many roles the heavy user is bound to, each at its own scope.
const HEAVY_BINDINGS: usize = 20;

// One word list, kept as a paragraph rather than one word per line.
#[rustfmt::skip]
const RESOURCES: [&str; 32] = [
    "invoice", "doc", "project", "report", "ticket", "order", "asset", "billing", "contract",
    "dashboard", "dataset", "deploy", "expense", "feature", "file", "incident", "job", "ledger",
    "metric", "note", "payment", "pipeline", "policy", "queue", "quote", "repo", "secret", "server",
    "shift", "team", "vendor", "wiki",
];
const SUBRESOURCES: [&str; 3] = ["line", "comment", "attachment"];
const ACTIONS: [&str; 8] = [
    "read", "create", "update", "delete", "approve", "export", "share", "archive",
];

/// SplitMix64. Hand-rolled rather than `rand`'s `StdRng` because the latter's stream
/// may change between crate versions, and benchmark data must not drift.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; `n` must be positive. Multiply-high keeps the bias negligible
    /// without a rejection loop.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The shape of a generated data set.
#[derive(Debug, Clone)]
pub struct Config {
    pub users: usize,
    pub grants_per_user: usize,
    pub roles: usize,
    /// Mean size of a role; sizes spread ±4 around it.
    pub permissions_per_role: usize,
    pub bindings_per_user: usize,
    pub orgs: usize,
    pub projects_per_org: usize,
    pub wide_role_members: usize,
    pub seed: u64,
}

impl Config {
    /// The benchmark's size: 100,000 users × 10 grants, 1,000 roles of ~20
    /// permissions, 2 bindings per user, and a role bound to 1,000 users.
    pub fn standard() -> Self {
        Config {
            users: 100_000,
            grants_per_user: 10,
            roles: 1_000,
            permissions_per_role: 20,
            bindings_per_user: 2,
            orgs: 1_000,
            projects_per_org: 10,
            wide_role_members: 1_000,
            seed: 0x7065_726d_7379_6e63,
        }
    }

    /// Same mix at a size a unit test builds in milliseconds.
    pub fn small() -> Self {
        Config {
            users: 2_000,
            roles: 60,
            orgs: 40,
            wide_role_members: 100,
            ..Config::standard()
        }
    }
}

#[derive(Debug, Clone)]
pub struct RoleData {
    pub name: RoleName,
    pub permissions: Vec<Permission>,
}

#[derive(Debug, Clone)]
pub struct UserData {
    pub id: UserId,
    pub home_org: usize,
    pub grants: Vec<(Permission, Option<Scope>)>,
    /// Index into [`Dataset::roles`], and the binding's scope.
    pub bindings: Vec<(usize, Option<Scope>)>,
}

/// One `can()` question with its expected answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub user: String,
    pub permission: String,
    pub scope: Option<String>,
    pub allowed: bool,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub config: Config,
    /// The generated roles, then [`WIDE_ROLE`] last.
    pub roles: Vec<RoleData>,
    /// The regular population, `u0` .. `u{n-1}`; questions are asked about these.
    pub users: Vec<UserData>,
    /// [`HEAVY_USER`], kept apart so that questions never pick it.
    pub heavy: UserData,
}

pub fn user_name(i: usize) -> String {
    format!("u{i}")
}

fn org_scope(org: usize) -> String {
    format!("org/{org}")
}

fn project_scope(org: usize, project: usize) -> String {
    format!("org/{org}/project/{project}")
}

fn scope(s: String) -> Option<Scope> {
    Some(Scope::parse(&s).expect("generated scopes are valid"))
}

fn perm(s: &str) -> Permission {
    Permission::parse(s).expect("generated permissions are valid")
}

fn random_exact(rng: &mut Rng) -> String {
    let res = rng.pick(&RESOURCES);
    let act = rng.pick(&ACTIONS);
    if rng.percent(75) {
        format!("{res}:{act}")
    } else {
        format!("{res}:{}:{act}", rng.pick(&SUBRESOURCES))
    }
}

fn random_wildcard(rng: &mut Rng) -> String {
    let res = rng.pick(&RESOURCES);
    if rng.percent(60) {
        format!("{res}:*")
    } else {
        format!("{res}:{}:*", rng.pick(&SUBRESOURCES))
    }
}

/// A permission a user could hold: mostly exact, a quarter `res:*`-style wildcards,
/// and very rarely `*`.
fn random_held(rng: &mut Rng) -> String {
    match rng.below(10_000) {
        0..2 => "*".to_string(),
        2..2500 => random_wildcard(rng),
        _ => random_exact(rng),
    }
}

/// A checked (literal) permission that the held pattern `pattern` covers.
fn concretize(rng: &mut Rng, pattern: &str) -> String {
    if pattern == "*" {
        return random_exact(rng);
    }
    match pattern.strip_suffix('*') {
        None => pattern.to_string(),
        Some(prefix) => {
            let act = rng.pick(&ACTIONS);
            if prefix.matches(':').count() == 1 && rng.percent(40) {
                format!("{prefix}{}:{act}", rng.pick(&SUBRESOURCES))
            } else {
                format!("{prefix}{act}")
            }
        }
    }
}

/// §1 matching, written out plainly and independently of `permsync_core`.
fn reference_matches(pattern: &str, checked: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return checked.len() > prefix.len() && checked.starts_with(prefix);
    }
    pattern == checked
}

/// §1 scope rule: global holdings apply everywhere; a scoped one applies at its
/// scope and below; a global question only sees global holdings.
fn reference_covers(held: Option<&Scope>, checked: Option<&str>) -> bool {
    match (held, checked) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(h), Some(c)) => {
            c == h.as_str()
                || c.strip_prefix(h.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        }
    }
}

impl Dataset {
    pub fn generate(config: Config) -> Dataset {
        let mut rng = Rng::new(config.seed);
        let mut roles: Vec<RoleData> = (0..config.roles)
            .map(|i| {
                let size = config.permissions_per_role.saturating_sub(4) + rng.below(9);
                RoleData {
                    name: RoleName::parse(&format!("role-{i}")).unwrap(),
                    permissions: role_permissions(&mut rng, size),
                }
            })
            .collect();
        let wide = roles.len();
        roles.push(RoleData {
            name: RoleName::parse(WIDE_ROLE).unwrap(),
            permissions: role_permissions(&mut rng, config.permissions_per_role),
        });

        let mut users: Vec<UserData> = (0..config.users)
            .map(|i| {
                let home_org = rng.below(config.orgs);
                let grants = (0..config.grants_per_user)
                    .map(|_| {
                        let p = perm(&random_held(&mut rng));
                        let s = match rng.below(100) {
                            0..35 => None,
                            35..65 => scope(org_scope(home_org)),
                            65..90 => {
                                scope(project_scope(home_org, rng.below(config.projects_per_org)))
                            }
                            _ => scope(org_scope(rng.below(config.orgs))),
                        };
                        (p, s)
                    })
                    .collect();
                let bindings = (0..config.bindings_per_user)
                    .map(|_| {
                        let role = rng.below(config.roles);
                        let s = match rng.below(100) {
                            0..20 => None,
                            20..65 => scope(org_scope(home_org)),
                            _ => scope(project_scope(home_org, rng.below(config.projects_per_org))),
                        };
                        (role, s)
                    })
                    .collect();
                UserData {
                    id: UserId::parse(&user_name(i)).unwrap(),
                    home_org,
                    grants,
                    bindings,
                }
            })
            .collect();

        // Spread the wide role's members evenly over the population.
        let step = (config.users / config.wide_role_members.max(1)).max(1);
        for u in users
            .iter_mut()
            .step_by(step)
            .take(config.wide_role_members)
        {
            let s = scope(org_scope(u.home_org));
            u.bindings.push((wide, s));
        }

        // The heavy user: distinct roles at distinct scopes, so no two role-derived
        // (permission, scope) pairs coincide, topped up with distinct global grants.
        let mut heavy_roles: Vec<usize> = Vec::new();
        while heavy_roles.len() < HEAVY_BINDINGS.min(config.roles) {
            let r = rng.below(config.roles);
            if !heavy_roles.contains(&r) {
                heavy_roles.push(r);
            }
        }
        let bindings: Vec<(usize, Option<Scope>)> = heavy_roles
            .iter()
            .enumerate()
            .map(|(k, &r)| (r, scope(org_scope(k))))
            .collect();
        let from_roles: usize = heavy_roles
            .iter()
            .map(|&r| roles[r].permissions.len())
            .sum();
        let mut direct: Vec<String> = Vec::new();
        while direct.len() < HEAVY_EFFECTIVE - from_roles {
            let p = random_exact(&mut rng);
            if !direct.contains(&p) {
                direct.push(p);
            }
        }
        let heavy = UserData {
            id: UserId::parse(HEAVY_USER).unwrap(),
            home_org: 0,
            grants: direct.iter().map(|p| (perm(p), None)).collect(),
            bindings,
        };

        Dataset {
            config,
            roles,
            users,
            heavy,
        }
    }

    pub fn wide_role(&self) -> &RoleData {
        self.roles
            .last()
            .expect("the wide role is always generated")
    }

    pub fn all_users(&self) -> impl Iterator<Item = &UserData> {
        self.users.iter().chain(std::iter::once(&self.heavy))
    }

    pub fn grant_count(&self) -> usize {
        self.all_users().map(|u| u.grants.len()).sum()
    }

    pub fn binding_count(&self) -> usize {
        self.all_users().map(|u| u.bindings.len()).sum()
    }

    /// Every grant as the core's record type. Ids (and so revisions) follow
    /// generation order, the way a store's `seq` would.
    pub fn grants(&self) -> Vec<Grant> {
        let mut id = 0;
        self.all_users()
            .flat_map(|u| u.grants.iter().map(move |g| (u, g)))
            .map(|(u, (permission, scope))| {
                id += 1;
                Grant {
                    id,
                    user: u.id.clone(),
                    permission: permission.clone(),
                    scope: scope.clone(),
                    expires_at: None,
                    created_at: CREATED_AT,
                    created_by: "bench".to_string(),
                }
            })
            .collect()
    }

    /// Every binding, with ids continuing after the grants'.
    pub fn bindings(&self) -> Vec<Binding> {
        let mut id = self.grant_count() as u64;
        self.all_users()
            .flat_map(|u| u.bindings.iter().map(move |b| (u, b)))
            .map(|(u, (role, scope))| {
                id += 1;
                Binding {
                    id,
                    user: u.id.clone(),
                    role: self.roles[*role].name.clone(),
                    scope: scope.clone(),
                    expires_at: None,
                    created_at: CREATED_AT,
                    created_by: "bench".to_string(),
                }
            })
            .collect()
    }

    /// The `seq` of the last generated record; changes applied on top start after it.
    pub fn last_seq(&self) -> u64 {
        (self.grant_count() + self.binding_count()) as u64
    }

    /// An index loaded the way the server loads one from its store.
    pub fn index(&self) -> Index {
        let mut index = Index::new();
        for r in &self.roles {
            index.load_role(r.name.clone(), r.permissions.clone(), String::new());
        }
        for g in self.grants() {
            index.load_grant(g);
        }
        for b in self.bindings() {
            index.load_binding(b);
        }
        let seq = self.last_seq();
        for u in self.all_users() {
            index.load_user(u.id.clone(), seq, true);
        }
        index.set_applied_seq(seq);
        index
    }

    /// The §1 answer, computed by brute force over the generated data.
    pub fn reference_can(&self, user: &str, permission: &str, scope: Option<&str>) -> bool {
        let u = if user == HEAVY_USER {
            &self.heavy
        } else {
            match user
                .strip_prefix('u')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|i| self.users.get(i))
            {
                Some(u) if u.id.as_str() == user => u,
                _ => return false,
            }
        };
        u.grants.iter().any(|(p, s)| {
            reference_covers(s.as_ref(), scope) && reference_matches(p.as_str(), permission)
        }) || u.bindings.iter().any(|(r, s)| {
            reference_covers(s.as_ref(), scope)
                && self.roles[*r]
                    .permissions
                    .iter()
                    .any(|p| reference_matches(p.as_str(), permission))
        })
    }

    /// `n` questions about the regular population, in a repeating pattern of 20:
    /// 7 allowed at a scope, 3 allowed globally, 7 denied at a scope, 3 denied
    /// globally. Any prefix whose length is a multiple of 20 has exactly that mix.
    /// Allowed ones come from direct grants and role bindings alike, often at a
    /// scope below the holding's, so ancestry and wildcards are exercised.
    pub fn questions(&self, n: usize, seed: u64) -> Vec<Question> {
        // (allowed, scoped), five to a row.
        #[rustfmt::skip]
        const PATTERN: [(bool, bool); 20] = [
            (true, true), (false, true), (true, false), (false, true), (true, true),
            (false, false), (true, true), (false, true), (true, true), (false, true),
            (true, false), (false, false), (true, true), (false, true), (true, true),
            (false, true), (true, false), (false, false), (true, true), (false, true),
        ];
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|i| {
                let (allowed, scoped) = PATTERN[i % PATTERN.len()];
                loop {
                    let q = self.candidate(&mut rng, allowed, scoped);
                    if q.allowed == allowed && q.scope.is_some() == scoped {
                        break q;
                    }
                }
            })
            .collect()
    }

    fn candidate(&self, rng: &mut Rng, want_allowed: bool, scoped: bool) -> Question {
        let ui = rng.below(self.users.len());
        let u = &self.users[ui];
        let (user, permission, scope) = if want_allowed {
            // Start from something the user holds and ask at or below its scope.
            let (pattern, held_scope) = if rng.percent(50) && !u.grants.is_empty() {
                let (p, s) = rng.pick(&u.grants);
                (p.as_str().to_string(), s.clone())
            } else {
                let (r, s) = rng.pick(&u.bindings);
                (
                    rng.pick(&self.roles[*r].permissions).as_str().to_string(),
                    s.clone(),
                )
            };
            let scope = if scoped {
                Some(match held_scope {
                    Some(s) if s.as_str().contains("/project/") => s.as_str().to_string(),
                    Some(s) if rng.percent(50) => s.as_str().to_string(),
                    Some(s) => format!(
                        "{}/project/{}",
                        s.as_str(),
                        rng.below(self.config.projects_per_org)
                    ),
                    None => self.random_scope(rng, u.home_org),
                })
            } else {
                None
            };
            (u.id.as_str().to_string(), concretize(rng, &pattern), scope)
        } else {
            let scope = scoped.then(|| self.random_scope(rng, u.home_org));
            match rng.below(10) {
                // Someone who does not exist.
                0 => (
                    format!("ghost{}", rng.below(1_000_000)),
                    random_exact(rng),
                    scope,
                ),
                // Something the user holds, asked about in another org.
                1..4 => {
                    let (p, _) = rng.pick(&u.grants);
                    let other =
                        (u.home_org + 1 + rng.below(self.config.orgs - 1)) % self.config.orgs;
                    let scope = scoped.then(|| org_scope(other));
                    (
                        u.id.as_str().to_string(),
                        concretize(rng, p.as_str()),
                        scope,
                    )
                }
                // Anything, anywhere near the user.
                _ => (u.id.as_str().to_string(), random_exact(rng), scope),
            }
        };
        let allowed = self.reference_can(&user, &permission, scope.as_deref());
        Question {
            user,
            permission,
            scope,
            allowed,
        }
    }

    /// The user's home org, one of its projects, or some other org.
    fn random_scope(&self, rng: &mut Rng, home_org: usize) -> String {
        match rng.below(10) {
            0..4 => org_scope(home_org),
            4..9 => project_scope(home_org, rng.below(self.config.projects_per_org)),
            _ => org_scope(rng.below(self.config.orgs)),
        }
    }
}

/// `size` distinct permissions, mostly exact with about one in ten a wildcard.
fn role_permissions(rng: &mut Rng, size: usize) -> Vec<Permission> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let p = if rng.percent(10) {
            random_wildcard(rng)
        } else {
            random_exact(rng)
        };
        if seen.insert(p.clone()) {
            out.push(perm(&p));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> (Dataset, Index) {
        let data = Dataset::generate(Config::small());
        let index = data.index();
        (data, index)
    }

    #[test]
    fn generation_is_deterministic() {
        let a = Dataset::generate(Config::small());
        let b = Dataset::generate(Config::small());
        assert_eq!(a.grants(), b.grants());
        assert_eq!(a.bindings(), b.bindings());
        assert_eq!(a.questions(200, 7), b.questions(200, 7));
    }

    #[test]
    fn shape_matches_the_config() {
        let (data, index) = small();
        let c = &data.config;
        assert_eq!(data.users.len(), c.users);
        assert!(data
            .users
            .iter()
            .all(|u| u.grants.len() == c.grants_per_user));
        let wide = index
            .roles()
            .into_iter()
            .find(|r| r.role.as_str() == WIDE_ROLE)
            .unwrap();
        assert_eq!(wide.members, c.wide_role_members);
        let heavy = index.snapshot(&data.heavy.id, NOW);
        assert_eq!(heavy.permissions.len(), HEAVY_EFFECTIVE);
        assert_eq!(heavy.roles.len(), HEAVY_BINDINGS);
    }

    #[test]
    fn index_answers_known_questions() {
        let (data, index) = small();
        let u = &data.users[0];
        // Every direct grant answers yes at its own scope and below it.
        for (p, s) in &u.grants {
            let checked = concretize(&mut Rng::new(1), p.as_str());
            let at = s.as_ref().map(|s| s.as_str().to_string());
            assert!(
                index.can(u.id.as_str(), &checked, at.as_deref(), NOW),
                "{p} at {at:?}"
            );
            let below = format!("{}/project/1", s.as_ref().map_or("org/0", |s| s.as_str()));
            assert!(
                index.can(u.id.as_str(), &checked, Some(&below), NOW),
                "{p} below {at:?}"
            );
        }
        // Every permission of every bound role answers yes at the binding's scope.
        for (r, s) in &u.bindings {
            for p in &data.roles[*r].permissions {
                let checked = concretize(&mut Rng::new(2), p.as_str());
                assert!(index.can(u.id.as_str(), &checked, s.as_ref().map(|s| s.as_str()), NOW));
            }
        }
        // Unknown permissions, users and look-alike scopes answer no.
        assert!(!index.can(u.id.as_str(), "nothing:here", None, NOW));
        assert!(!index.can("ghost", "invoice:read", None, NOW));
        for (p, s) in u.grants.iter().filter(|(_, s)| s.is_some()) {
            let s = s.as_ref().unwrap().as_str();
            let lookalike = format!("{s}0");
            let held_elsewhere = data.reference_can(u.id.as_str(), p.as_str(), Some(&lookalike));
            assert_eq!(
                index.can(u.id.as_str(), p.as_str(), Some(&lookalike), NOW),
                held_elsewhere
            );
            assert_eq!(
                index.can(u.id.as_str(), p.as_str(), None, NOW),
                data.reference_can(u.id.as_str(), p.as_str(), None)
            );
        }
    }

    #[test]
    fn index_agrees_with_the_reference_on_generated_questions() {
        let (data, index) = small();
        let questions = data.questions(2_000, 11);
        for q in &questions {
            assert_eq!(
                index.can(&q.user, &q.permission, q.scope.as_deref(), NOW),
                q.allowed,
                "{q:?}"
            );
        }
        let allowed = questions.iter().filter(|q| q.allowed).count();
        let scoped = questions.iter().filter(|q| q.scope.is_some()).count();
        assert_eq!((allowed, scoped), (1_000, 1_400));
    }

    #[test]
    fn reference_follows_the_protocol_rules() {
        assert!(reference_matches("invoice:*", "invoice:line:edit"));
        assert!(!reference_matches("invoice:*", "invoice"));
        assert!(!reference_matches("invoice:*", "invoices:read"));
        assert!(reference_matches("*", "anything"));
        let acme = Scope::parse("org/acme").unwrap();
        assert!(reference_covers(Some(&acme), Some("org/acme/project/7")));
        assert!(!reference_covers(Some(&acme), Some("org/acmex")));
        assert!(!reference_covers(Some(&acme), None));
        assert!(reference_covers(None, Some("org/acme")));
    }
}
