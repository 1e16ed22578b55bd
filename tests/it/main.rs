//! The one integration-test binary: drives the real `tenantctl` binary against a real Postgres cluster.

mod adopt;
mod bench;
mod citus;
mod cli_output;
mod compile;
mod concurrent;
mod corpus;
mod dev;
mod dry_run;
mod edges;
mod harness;
mod isolation;
mod lint;
mod matrix;
mod migrate;
mod model_growth;
mod pgrls;
mod pooler;
mod support;
mod tenants;
mod tls;
mod verify;
mod workflow;
