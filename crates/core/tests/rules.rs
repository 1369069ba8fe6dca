//! Index, revision and delegation rules, on plain data.

use permsync_core::*;

const T0: Timestamp = Timestamp(1_000_000);

struct World {
    index: Index,
    seq: u64,
}

fn u(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}
fn p(s: &str) -> Permission {
    Permission::parse(s).unwrap()
}
fn sc(s: &str) -> Scope {
    Scope::parse(s).unwrap()
}

impl World {
    fn new() -> Self {
        World {
            index: Index::new(),
            seq: 0,
        }
    }
    fn apply(&mut self, kind: ChangeKind) -> Vec<String> {
        self.seq += 1;
        let mut v: Vec<String> = self
            .index
            .apply(&Change {
                seq: self.seq,
                at: T0,
                actor: "test".into(),
                kind,
            })
            .into_iter()
            .map(|u| u.to_string())
            .collect();
        v.sort();
        v
    }
    fn user(&mut self, name: &str) {
        self.apply(ChangeKind::UserCreated { user: u(name) });
    }
    fn grant(
        &mut self,
        user: &str,
        perm: &str,
        scope: Option<&str>,
        expires_at: Option<Timestamp>,
    ) -> u64 {
        let id = self.seq + 1;
        self.apply(ChangeKind::GrantAdded(Grant {
            id,
            user: u(user),
            permission: p(perm),
            scope: scope.map(sc),
            expires_at,
            created_at: T0,
            created_by: "test".into(),
        }));
        id
    }
    fn role(&mut self, name: &str, perms: &[&str]) -> Vec<String> {
        self.apply(ChangeKind::RoleSet {
            role: RoleName::parse(name).unwrap(),
            permissions: perms.iter().map(|x| p(x)).collect(),
            description: String::new(),
        })
    }
    fn bind(
        &mut self,
        user: &str,
        role: &str,
        scope: Option<&str>,
        expires_at: Option<Timestamp>,
    ) -> u64 {
        let id = self.seq + 1;
        self.apply(ChangeKind::BindingAdded(Binding {
            id,
            user: u(user),
            role: RoleName::parse(role).unwrap(),
            scope: scope.map(sc),
            expires_at,
            created_at: T0,
            created_by: "test".into(),
        }));
        id
    }
    fn can(&self, user: &str, perm: &str, scope: Option<&str>) -> bool {
        self.index.can(user, perm, scope, T0)
    }
}

#[test]
fn grants_match_with_scope_ancestry_and_wildcards() {
    let mut w = World::new();
    w.user("alice");
    w.grant("alice", "invoice:*", Some("org/acme"), None);
    w.grant("alice", "report:read", None, None);
    assert!(w.can("alice", "invoice:approve", Some("org/acme")));
    assert!(w.can("alice", "invoice:line:edit", Some("org/acme/project/7")));
    assert!(!w.can("alice", "invoice:approve", Some("org/other")));
    assert!(
        !w.can("alice", "invoice:approve", None),
        "a scoped grant does not answer a global check"
    );
    assert!(w.can("alice", "report:read", None));
    assert!(
        w.can("alice", "report:read", Some("org/x/project/1")),
        "a global grant applies everywhere"
    );
    assert!(!w.can("alice", "report:write", None));
    assert!(!w.can("bob", "report:read", None));
    assert!(w.index.can_anywhere("alice", "invoice:approve", T0));
}

#[test]
fn roles_apply_at_their_binding_scope() {
    let mut w = World::new();
    w.user("alice");
    w.role("editor", &["doc:edit", "doc:comment:*"]);
    w.bind("alice", "editor", Some("project/7"), None);
    assert!(w.can("alice", "doc:edit", Some("project/7")));
    assert!(w.can("alice", "doc:comment:delete", Some("project/7/doc/1")));
    assert!(!w.can("alice", "doc:edit", Some("project/8")));
    assert!(!w.can("alice", "doc:delete", Some("project/7")));
}

#[test]
fn expired_holdings_stop_counting_at_expires_at() {
    let mut w = World::new();
    w.user("alice");
    w.grant("alice", "a:b", None, Some(T0.plus_millis(10)));
    w.role("r", &["c:d"]);
    w.bind("alice", "r", None, Some(T0.plus_millis(20)));
    assert!(w.index.can("alice", "a:b", None, T0.plus_millis(9)));
    assert!(!w.index.can("alice", "a:b", None, T0.plus_millis(10)));
    assert!(w.index.can("alice", "c:d", None, T0.plus_millis(19)));
    assert!(!w.index.can("alice", "c:d", None, T0.plus_millis(20)));
    assert_eq!(w.index.next_expiry(), Some(T0.plus_millis(10)));
    let snap = w.index.snapshot(&u("alice"), T0);
    assert_eq!(snap.next_change_at, Some(T0.plus_millis(10)));
    let later = w.index.snapshot(&u("alice"), T0.plus_millis(15));
    assert_eq!(later.permissions.len(), 1);
    assert_eq!(later.next_change_at, Some(T0.plus_millis(20)));
}

#[test]
fn a_role_edit_raises_exactly_its_members() {
    let mut w = World::new();
    for name in ["alice", "bob", "carol"] {
        w.user(name);
    }
    w.role("editor", &["doc:edit"]);
    w.role("viewer", &["doc:read"]);
    w.bind("alice", "editor", None, None);
    w.bind("bob", "editor", Some("project/1"), None);
    w.bind("carol", "viewer", None, None);
    let before_carol = w.index.revision("carol");
    assert_eq!(
        w.role("editor", &["doc:edit", "doc:publish"]),
        vec!["alice", "bob"]
    );
    assert_eq!(w.index.revision("alice"), w.seq);
    assert_eq!(w.index.revision("bob"), w.seq);
    assert_eq!(w.index.revision("carol"), before_carol);
    assert!(w.can("alice", "doc:publish", None));
    // Deleting the role removes its bindings and touches only its members.
    assert_eq!(
        w.apply(ChangeKind::RoleDeleted {
            role: RoleName::parse("editor").unwrap()
        }),
        vec!["alice", "bob"]
    );
    assert!(!w.can("alice", "doc:edit", None));
    assert!(w.index.bindings("alice").is_empty());
    assert_eq!(w.index.revision("carol"), before_carol);
}

#[test]
fn a_grant_raises_only_its_user_and_revisions_never_decrease() {
    let mut w = World::new();
    w.user("alice");
    w.user("bob");
    let bob = w.index.revision("bob");
    assert_eq!(
        w.apply(ChangeKind::Invalidated {
            users: vec![u("alice")],
            reason: None
        }),
        vec!["alice"]
    );
    let id = w.grant("alice", "x:y", None, None);
    assert_eq!(w.index.revision("alice"), id);
    assert_eq!(w.index.revision("bob"), bob);
    w.apply(ChangeKind::UserDeleted { user: u("alice") });
    let deleted_at = w.index.revision("alice");
    assert!(!w.index.user_exists("alice"));
    assert!(!w.can("alice", "x:y", None));
    w.user("alice");
    assert!(w.index.revision("alice") > deleted_at);
    assert!(
        !w.can("alice", "x:y", None),
        "a recreated user starts empty"
    );
    // A change applied twice, or out of order, changes nothing.
    let old = Change {
        seq: 1,
        at: T0,
        actor: "t".into(),
        kind: ChangeKind::UserDeleted { user: u("bob") },
    };
    assert!(w.index.apply(&old).is_empty());
    assert!(w.index.user_exists("bob"));
}

#[test]
fn snapshot_merges_sources() {
    let mut w = World::new();
    w.user("alice");
    w.role("editor", &["doc:edit"]);
    w.grant(
        "alice",
        "doc:edit",
        Some("project/7"),
        Some(T0.plus_millis(100)),
    );
    w.bind("alice", "editor", Some("project/7"), None);
    let snap = w.index.snapshot(&u("alice"), T0);
    assert_eq!(snap.permissions.len(), 1);
    let e = &snap.permissions[0];
    assert_eq!(e.expires_at, None, "one source never expires");
    assert_eq!(
        e.via,
        vec![Via::Direct, Via::Role(RoleName::parse("editor").unwrap())]
    );
    assert_eq!(snap.roles.len(), 1);
    assert_eq!(snap.revision, w.seq);
}

#[test]
fn delegation_cannot_escalate() {
    let mut w = World::new();
    for name in ["root", "lead", "dev"] {
        w.user(name);
    }
    w.grant("root", "permsync:admin", None, None);
    w.grant("lead", "permsync:delegate", Some("org/acme"), None);
    w.grant("lead", "doc:edit", Some("org/acme"), None);
    w.grant("lead", "doc:read", None, None);
    w.role("editor", &["doc:edit"]);
    w.role("super", &["doc:edit", "permsync:admin"]);
    let (edit, star, admin) = (p("doc:edit"), p("doc:*"), p("permsync:admin"));
    let (acme, proj, other) = (sc("org/acme"), sc("org/acme/project/1"), sc("org/other"));
    let editor = RoleName::parse("editor").unwrap();
    let sup = RoleName::parse("super").unwrap();
    let check = |actor: &str, target: &str, a: AdminAction<'_>| {
        authorize_change(&w.index, actor, target, a, T0).is_ok()
    };
    use AdminAction::*;
    assert!(
        check(
            "root",
            "root",
            Grant {
                permission: &admin,
                scope: None
            }
        ),
        "admins may do anything"
    );
    assert!(check(
        "lead",
        "dev",
        Grant {
            permission: &edit,
            scope: Some(&acme)
        }
    ));
    assert!(
        check(
            "lead",
            "dev",
            Grant {
                permission: &edit,
                scope: Some(&proj)
            }
        ),
        "a sub-scope is within the scope"
    );
    assert!(
        !check(
            "lead",
            "dev",
            Grant {
                permission: &edit,
                scope: Some(&other)
            }
        ),
        "outside the delegated scope"
    );
    assert!(
        !check(
            "lead",
            "dev",
            Grant {
                permission: &edit,
                scope: None
            }
        ),
        "global is wider than the delegated scope"
    );
    assert!(
        !check(
            "lead",
            "dev",
            Grant {
                permission: &star,
                scope: Some(&acme)
            }
        ),
        "a wildcard wider than held"
    );
    assert!(
        !check(
            "lead",
            "dev",
            Grant {
                permission: &admin,
                scope: Some(&acme)
            }
        ),
        "permsync permissions"
    );
    assert!(
        !check(
            "lead",
            "lead",
            Grant {
                permission: &edit,
                scope: Some(&acme)
            }
        ),
        "one's own grants"
    );
    assert!(check(
        "lead",
        "dev",
        Bind {
            role: &editor,
            scope: Some(&acme)
        }
    ));
    assert!(
        !check(
            "lead",
            "dev",
            Bind {
                role: &sup,
                scope: Some(&acme)
            }
        ),
        "a role with more than the delegator holds"
    );
    assert!(
        !check(
            "dev",
            "lead",
            Grant {
                permission: &edit,
                scope: Some(&acme)
            }
        ),
        "no delegate permission"
    );
}
