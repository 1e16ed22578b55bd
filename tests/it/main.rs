//! The one integration-test binary: drives the real `tenantctl` binary against a real Postgres cluster.

mod harness;
mod tls;
