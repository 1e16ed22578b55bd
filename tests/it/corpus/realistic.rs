//! The realistic clean database: what a real team's correct database holds besides the declared
//! tables (pg_trgm and pg_stat_statements, revoked from PUBLIC, in `public`, extensions in a schema of their own, an operations
//! schema the app cannot reach, several logins granted the app role, a support login granted the
//! admin role, a deploy login that is an operator, database- and role-level timeouts, comments,
//! the public schema and the database revoked from PUBLIC and granted to the declared roles,
//! USAGE on the extensions' schema granted to the app role, which finds it on its search_path).
//! verify must pass it: a false alarm is a bug.

use super::{failing_ids, make_template, verify_in, Template};
use crate::harness::psql_exec;

/// Everything besides the declared tables. `{p}` is the roles' prefix, `{app}`, `{admin}`,
/// `{owner}` the tenancy roles, `{db}` the database.
const REALISTIC: &str = r#"
CREATE EXTENSION pg_trgm SCHEMA public;
CREATE SCHEMA extensions;
CREATE EXTENSION btree_gin SCHEMA extensions;
CREATE EXTENSION pgcrypto SCHEMA extensions;
CREATE EXTENSION citext SCHEMA extensions;
-- Led by the tenant column (btree_gin's uuid class): a trigram index on full_name alone would let
-- the planner scan other gyms' names before the policy (world.index-leading).
CREATE INDEX members_name_trgm ON public.members USING gin (gym_id, full_name gin_trgm_ops);
COMMENT ON TABLE public.members IS 'People who train at a gym';
COMMENT ON SCHEMA extensions IS 'Extensions live here, away from the application';

CREATE SCHEMA ops;
COMMENT ON SCHEMA ops IS 'Operations: jobs and audit, never the application';
CREATE TABLE ops.audit_log (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, gym_id uuid,
                            at timestamptz NOT NULL DEFAULT now(), what text NOT NULL);
INSERT INTO ops.audit_log (gym_id, what) SELECT id, 'created' FROM public.gyms;
CREATE VIEW ops.audit_per_gym AS SELECT gym_id, count(*) AS n FROM ops.audit_log GROUP BY gym_id;
CREATE FUNCTION ops.prune_audit(keep interval) RETURNS bigint LANGUAGE sql
  AS $$ WITH d AS (DELETE FROM ops.audit_log WHERE at < now() - keep RETURNING 1) SELECT count(*) FROM d $$;
REVOKE EXECUTE ON FUNCTION ops.prune_audit(interval) FROM PUBLIC;

CREATE ROLE "{p}web" LOGIN PASSWORD 'x' IN ROLE {app};
CREATE ROLE "{p}worker" LOGIN PASSWORD 'x' IN ROLE {app};
CREATE ROLE "{p}app_users" NOLOGIN IN ROLE {app};
CREATE ROLE "{p}api" LOGIN PASSWORD 'x' IN ROLE "{p}app_users";
CREATE ROLE "{p}support" LOGIN PASSWORD 'x' IN ROLE {admin};
CREATE ROLE "{p}monitor" LOGIN PASSWORD 'x' IN ROLE pg_monitor;
CREATE ROLE "{p}deploy" LOGIN PASSWORD 'x' IN ROLE {app}, {admin}, {owner};
GRANT USAGE ON SCHEMA ops TO "{p}support";
GRANT SELECT ON ops.audit_log, ops.audit_per_gym TO "{p}support";

-- Hardening: the schema and the database usable by the declared roles, not by PUBLIC.
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO {app}, {admin}, {owner};
-- The app calls pgcrypto's crypt() and compares citext: USAGE on a schema of extensions' objects
-- only, on which nobody but its owner may CREATE (adversarial review round 3's clean 08).
GRANT USAGE ON SCHEMA extensions TO {app};
ALTER DATABASE {db} SET search_path = "$user", public, extensions;
REVOKE ALL ON DATABASE {db} FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {app}, {admin}, "{p}monitor";

ALTER DATABASE {db} SET statement_timeout = '30s';
ALTER DATABASE {db} SET idle_in_transaction_session_timeout = '1min';
ALTER ROLE "{p}worker" SET statement_timeout = '10min';
ALTER ROLE "{p}web" SET application_name = 'web';
ALTER ROLE "{p}web" SET lock_timeout = '2s';
ALTER ROLE "{p}web" SET search_path = "$user", public;
"#;

fn realistic() -> (Template, String) {
    let t = make_template("verify_realistic");
    let r = &t.roles;
    let sql = REALISTIC
        .replace("{p}", &t.db.role_prefix)
        .replace("{app}", &format!("\"{}\"", r.app))
        .replace("{admin}", &format!("\"{}\"", r.admin))
        .replace("{owner}", &format!("\"{}\"", r.owner))
        .replace("{db}", &format!("\"{}\"", t.db.name));
    psql_exec(&t.db.url, &sql);
    // Statement statistics for the monitoring login, not for the application's (its fix).
    psql_exec(
        &t.db.url,
        "CREATE EXTENSION pg_stat_statements SCHEMA public",
    );
    psql_exec(&t.db.url, super::world::STAT_STATEMENTS_REVOKED);
    let url = t.db.url.clone();
    (t, url)
}

/// Declare the deploy login an operator in the project's tenantctl.toml.
fn declare_operator(t: &Template) {
    let path = t.dir.join("tenantctl.toml");
    let mut toml = std::fs::read_to_string(&path).unwrap();
    toml.push_str(&format!(
        "\n[verify]\noperators = [\"{}deploy\"]\n",
        t.db.role_prefix
    ));
    std::fs::write(path, toml).unwrap();
}

#[test]
fn the_realistic_clean_database_passes() {
    let (t, url) = realistic();
    // The deploy login (granted the app, admin and owner roles) is an operator: undeclared, it
    // is one of the application's logins and fails the gate.
    let (code, json, stderr) = verify_in(&t, &url, &[]);
    assert_eq!(code, 1, "{json:#}\n{stderr}");
    let ids = failing_ids(&json);
    assert!(
        ids.iter().any(|i| i == "role.app-grantee"),
        "the undeclared operator login must be reported: {ids:?}"
    );

    declare_operator(&t);
    let (code, json, stderr) = verify_in(&t, &url, &[]);
    assert_eq!(
        code, 0,
        "the realistic clean database must pass: {json:#}\n{stderr}"
    );
    let errors: Vec<&serde_json::Value> = json["checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["status"] != "pass" && c["severity"] == "error")
                .collect()
        })
        .unwrap_or_default();
    assert!(errors.is_empty(), "{errors:#?}");
}
