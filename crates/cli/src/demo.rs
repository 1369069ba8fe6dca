//! Demo data for `serve --demo`: an admin and a few users with known passwords,
//! roles, and scoped grants, so a newcomer can try the API at once.

use permsync_core::{Permission, RoleName, Scope, UserId};
use permsync_server::time::now;
use permsync_store::{NewBinding, NewGrant, Store, StoreError};

const ACTOR: &str = "demo";

/// (user, password) of the demo accounts.
pub const ACCOUNTS: &[(&str, &str)] = &[
    ("admin", "admin-password"),
    ("alice", "alice-password"),
    ("bob", "bob-password"),
    ("carol", "carol-password"),
];

fn p(s: &str) -> Permission {
    Permission::parse(s).expect("demo permission")
}

/// Seeds the demo data once; later starts leave it as the admin changed it.
pub async fn seed(store: &dyn Store) -> anyhow::Result<()> {
    let admin = UserId::parse("admin")?;
    if store.password_hash(&admin).await?.is_some() {
        print_accounts("already seeded");
        return Ok(());
    }
    let at = now();
    for (name, password) in ACCOUNTS {
        let user = UserId::parse(name)?;
        let hash = permsync_auth::hash_password(password);
        match store.create_user(ACTOR, &user, Some(&hash), at).await {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => store.set_password(&user, &hash).await?,
            Err(e) => return Err(e.into()),
        }
    }
    let roles: &[(&str, &[&str], &str)] = &[
        (
            "viewer",
            &["project:read", "doc:read"],
            "Reads projects and their documents",
        ),
        (
            "editor",
            &["project:read", "doc:*", "comment:*"],
            "Writes documents and comments",
        ),
        (
            "billing",
            &["invoice:read", "invoice:approve"],
            "Handles invoices",
        ),
        // Bound by the shop's backend when a user buys the Pro plan (src/shop.rs).
        (
            "pro",
            &["project:create", "shop:pro"],
            "Bought in the shop: the Pro plan (creates projects)",
        ),
    ];
    for (name, perms, description) in roles {
        let perms: Vec<Permission> = perms.iter().map(|x| p(x)).collect();
        store
            .set_role(ACTOR, &RoleName::parse(name)?, &perms, description, at)
            .await?;
    }
    let grant = |user: &str, perm: &str, scope: Option<&str>| NewGrant {
        user: UserId::parse(user).expect("demo user"),
        permission: p(perm),
        scope: scope.map(|s| Scope::parse(s).expect("demo scope")),
        expires_at: None,
    };
    store
        .add_grant(ACTOR, grant("admin", "permsync:admin", None), at)
        .await?;
    store
        .add_grant(ACTOR, grant("alice", "shop:browse", None), at)
        .await?;
    store
        .add_grant(ACTOR, grant("alice", "report:read", Some("org/acme")), at)
        .await?;
    store
        .add_grant(ACTOR, grant("bob", "shop:browse", None), at)
        .await?;
    store
        .add_grant(
            ACTOR,
            grant("carol", "permsync:delegate", Some("org/acme")),
            at,
        )
        .await?;
    store
        .add_grant(ACTOR, grant("carol", "report:read", Some("org/acme")), at)
        .await?;
    let bind = |user: &str, role: &str, scope: Option<&str>| NewBinding {
        user: UserId::parse(user).expect("demo user"),
        role: RoleName::parse(role).expect("demo role"),
        scope: scope.map(|s| Scope::parse(s).expect("demo scope")),
        expires_at: None,
    };
    store
        .add_binding(ACTOR, bind("alice", "viewer", Some("org/acme")), at)
        .await?;
    store
        .add_binding(
            ACTOR,
            bind("alice", "editor", Some("org/acme/project/7")),
            at,
        )
        .await?;
    store
        .add_binding(ACTOR, bind("bob", "billing", Some("org/acme")), at)
        .await?;
    store
        .add_binding(ACTOR, bind("carol", "editor", Some("org/acme")), at)
        .await?;
    print_accounts("seeded");
    Ok(())
}

fn print_accounts(what: &str) {
    println!("demo data {what}; accounts (user / password):");
    for (user, password) in ACCOUNTS {
        println!("  {user:<6} / {password}");
    }
}
