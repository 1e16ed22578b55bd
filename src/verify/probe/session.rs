//! One probe connection: the plan's statements with their parameter types (learnt once, inside a
//! rolled-back transaction, then always run unnamed), whether the probe function can be created
//! here, and its transactions (always rolled back). Nothing outlives a transaction (no named
//! prepared statement, no temporary function), so a transaction pooler is safe.

use std::future::Future;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use postgres_types::Type;
use tokio::sync::OnceCell;
use tokio_postgres::Client;

use super::pipeline::run_error;
use super::plan::Plan;
use crate::pg;
use crate::pg::unnamed::typed;
use crate::sqlgen;
use crate::verify::tx::{rolled_back, Scope};

/// The same switches as `pg::tx::{set_role, set_tenant}`, run unnamed to be pipelined.
const SET_ROLE: &str = crate::pg::tx::SET_ROLE_SQL;
const SET_ROLE_CONTEXT: &str = crate::pg::tx::SET_TENANT_SQL;
const SAVEPOINT: &str = "SAVEPOINT tc_probe";
const ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT tc_probe";
const ROLLBACK: &str = "ROLLBACK";

/// Whether the app role can call the probe function just created (in this transaction).
const PROBE_FUNCTION_USABLE: &str = "SELECT pg_catalog.has_function_privilege($1, $2::text::regprocedure, 'EXECUTE') \
                     AND pg_catalog.has_schema_privilege($1, pg_catalog.pg_my_temp_schema(), 'USAGE') AS usable";

/// A statement run unnamed (parse, bind, execute in one round trip), with its parameter types.
pub(super) struct Statement {
    pub sql: String,
    pub types: Vec<Type>,
}

/// One target's statements.
pub(super) struct TargetStatements {
    pub count: Statement,
    pub admin: Option<Statement>,
    pub update: Option<Statement>,
    pub delete: Option<Statement>,
    pub insert: Option<Statement>,
    pub change: Statement,
}

/// The verify connection's side of a probe connection that logs in as the application
/// (`--app-url`): the admin's reference reads of a tenant probed statement by statement, on a
/// connection of verify's own, opened when first needed.
pub(super) struct AdminSide {
    pub url: pg::Target,
    pub client: OnceCell<Client>,
}

impl AdminSide {
    pub(super) async fn client(&self) -> Result<&Client> {
        self.client.get_or_try_init(|| pg::connect(&self.url)).await
    }
}

/// One connection with the plan's statements prepared.
pub(super) struct Conn {
    pub client: Client,
    pub plan: Arc<Plan>,
    /// `SET ROLE` (to the admin, on this connection or the admin side).
    pub set_role: Statement,
    /// Act as the application: `SET ROLE` to the app role, or (as its login) no switch at all.
    pub as_app: Statement,
    /// [`Conn::as_app`] in a tenant's context.
    pub as_app_ctx: Statement,
    pub timeout: Statement,
    /// Where the admin's reads run when this connection is the application's login.
    pub admin: Option<AdminSide>,
    pub savepoint: Statement,
    pub rollback_to: Statement,
    pub targets: Vec<TargetStatements>,
    pub readables: Vec<Statement>,
    /// The call of the probe function, when it can be created here: see [`Conn::probe_function`].
    /// The function is created in each batch's transaction (and rolled back with it).
    pub probe: Option<Statement>,
}

/// Learn `sql`'s parameter types, when there is one. The prepared statement is dropped (closed)
/// at once: callers run this inside a transaction, so it never outlives it.
async fn prep_opt(client: &Client, sql: Option<&str>) -> Result<Option<Statement>> {
    match sql {
        None => Ok(None),
        Some(sql) => client
            .prepare(sql)
            .await
            .map(|s| {
                Some(Statement {
                    sql: sql.to_string(),
                    types: s.params().to_vec(),
                })
            })
            .with_context(|| format!("cannot prepare probe: {sql}")),
    }
}

/// The text of every statement a connection prepares, in the order [`Conn::new`] takes them.
fn texts(plan: &Plan) -> Vec<Option<&str>> {
    let (as_app, as_app_ctx) = match plan.acting.login {
        None => (SET_ROLE, SET_ROLE_CONTEXT),
        Some(_) => (sqlgen::STAY_AS_LOGIN, sqlgen::STAY_AS_LOGIN_IN_CONTEXT),
    };
    let mut texts: Vec<Option<&str>> = [
        SET_ROLE,
        as_app,
        as_app_ctx,
        sqlgen::PROBE_TIMEOUT,
        SAVEPOINT,
        ROLLBACK_TO,
    ]
    .into_iter()
    .map(Some)
    .collect();
    for t in &plan.targets {
        texts.extend([
            Some(t.sql.count.as_str()),
            t.sql.admin.as_deref(),
            t.sql.update.as_deref(),
            t.sql.delete.as_deref(),
            t.sql.insert.as_deref(),
            Some(t.sql.change.as_str()),
        ]);
    }
    texts.extend(plan.readables.iter().map(|r| Some(r.sql.as_str())));
    texts
}

impl Conn {
    /// `admin`: verify's own URL, when `client` is the application's login.
    pub(super) async fn new(
        client: Client,
        plan: Arc<Plan>,
        admin: Option<pg::Target>,
    ) -> Result<Conn> {
        // Every statement at once: tokio-postgres pipelines them, one round trip in all; inside a
        // rolled-back transaction, so that a pooler keeps them on one server connection.
        let done = rolled_back(
            &client,
            &Scope::Transaction,
            futures_util::future::try_join_all(
                texts(&plan).into_iter().map(|sql| prep_opt(&client, sql)),
            ),
        )
        .await
        .map_err(|e| simple_error("BEGIN", &e))?;
        done.rollback.map_err(|e| simple_error(ROLLBACK, &e))?;
        let prepared = done.body?;
        let mut it = prepared.into_iter();
        let mut next = || it.next().expect("one statement per text");
        let fixed: [Statement; 6] = std::array::from_fn(|_| next().expect("fixed statement"));
        let [set_role, as_app, as_app_ctx, timeout, savepoint, rollback_to] = fixed;
        let targets = plan
            .targets
            .iter()
            .map(|_| TargetStatements {
                count: next().expect("count statement"),
                admin: next(),
                update: next(),
                delete: next(),
                insert: next(),
                change: next().expect("change statement"),
            })
            .collect();
        let readables = plan
            .readables
            .iter()
            .map(|_| next().expect("readable statement"))
            .collect();
        Ok(Conn {
            probe: None,
            set_role,
            as_app,
            as_app_ctx,
            timeout,
            admin: admin.map(|url| AdminSide {
                url,
                client: OnceCell::new(),
            }),
            savepoint,
            rollback_to,
            targets,
            readables,
            client,
            plan,
        })
    }

    /// Whether the fast path can create the probe function in the temporary schema to probe a
    /// batch of tenants in one statement: tried once in a rolled-back transaction (each batch
    /// creates it again in its own). Left unset (each tenant is then probed statement by
    /// statement) when it cannot be created (no TEMP privilege on the database, no PL/pgSQL), the
    /// app role could not call it, or the plan has none.
    pub(super) async fn probe_function(&mut self) -> Result<()> {
        let Some(create) = &self.plan.probe_function else {
            return Ok(());
        };
        let client = &self.client;
        let created = async {
            client.batch_execute(create).await?;
            let r = client
                .query_typed_one(
                    PROBE_FUNCTION_USABLE,
                    typed![&self.plan.app, &sqlgen::PROBE_SIGNATURE],
                )
                .await?;
            if !r.get::<_, bool>("usable") {
                return Ok(None);
            }
            let call = sqlgen::probe_function_call();
            let types = client.prepare(&call).await?.params().to_vec();
            Ok::<_, tokio_postgres::Error>(Some(Statement { sql: call, types }))
        };
        let done = rolled_back(client, &Scope::Transaction, created)
            .await
            .map_err(|e| simple_error("BEGIN", &e))?;
        done.rollback.map_err(|e| simple_error(ROLLBACK, &e))?;
        self.probe = match done.body {
            Ok(call) => call,
            Err(e) if e.as_db_error().is_some() => None,
            Err(e) => return Err(run_error(&e)).context("cannot create the probe function"),
        };
        Ok(())
    }

    /// A statement (or batch) of transaction control; its failure stops the run.
    pub(super) async fn simple(&self, sql: &str) -> Result<()> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| simple_error(sql, &e))
    }

    /// Run `body` in `scope` on this connection under the probes' statement timeout, always
    /// rolled back (see [`crate::verify::tx::rolled_back`]): the body's result and the rollback's.
    pub(super) async fn rolled_back<T>(
        &self,
        scope: &Scope,
        body: impl Future<Output = T>,
    ) -> Result<(T, Result<()>)> {
        let timed = async {
            let limit = self
                .client
                .query_typed(&self.timeout.sql, typed![&self.plan.acting.timeout])
                .await;
            (limit, body.await)
        };
        let done = rolled_back(&self.client, scope, timed)
            .await
            .map_err(|e| simple_error(&scope.begin(), &e))?;
        let rollback = done.rollback.map_err(|e| simple_error(scope.undo(), &e));
        let (limit, body) = done.body;
        limit.map_err(|e| simple_error(sqlgen::PROBE_TIMEOUT, &e))?;
        Ok((body, rollback))
    }
}

fn simple_error(sql: &str, e: &tokio_postgres::Error) -> anyhow::Error {
    anyhow!(e.to_string()).context(format!("{sql} failed"))
}
