use super::{lint_files, Finding};

/// The findings of one file, in order.
fn lint(sql: &str) -> Vec<Finding> {
    lint_files(&[sql]).pop().unwrap_or_default()
}

fn rules(sql: &str) -> Vec<(&'static str, usize, usize, String)> {
    lint(sql)
        .into_iter()
        .map(|f| (f.rule, f.line, f.column, f.table))
        .collect()
}

#[test]
fn a_table_the_file_creates_is_new_and_locks_nothing_anyone_waits_on() {
    let sql = "CREATE TABLE \"public\".\"rooms\" (id int, gym_id int NOT NULL);\n\
               ALTER TABLE \"public\".\"rooms\" ADD CONSTRAINT r_fk FOREIGN KEY (gym_id) REFERENCES gyms (id);\n\
               ALTER TABLE rooms ADD CONSTRAINT r_ck CHECK (id > 0), ALTER COLUMN id SET NOT NULL;\n\
               CREATE INDEX \"rooms_gym_idx\" ON \"public\".\"rooms\" (\"gym_id\", \"id\");\n\
               DROP INDEX rooms_gym_idx;";
    assert_eq!(rules(sql), vec![]);
}

#[test]
fn statements_on_existing_tables_are_reported_where_they_start() {
    let sql = "-- V3\nCREATE INDEX \"members_x_idx\" ON \"public\".\"members\" (\"gym_id\", \"x\");\n\
               ALTER TABLE \"public\".\"members\" ADD CONSTRAINT \"m_fk\" FOREIGN KEY (\"gym_id\", \"c\") REFERENCES \"public\".\"coaches\" (\"gym_id\", \"id\");\n\
               ALTER TABLE members ADD CONSTRAINT m_ck CHECK (x > 0);\n\
               ALTER TABLE members ADD CONSTRAINT m_u UNIQUE (x), ADD PRIMARY KEY (id);\n\
               ALTER TABLE members ALTER COLUMN x TYPE bigint, ALTER y SET NOT NULL;\n\
               ALTER TABLE members ADD COLUMN z text NOT NULL;\n\
               \x20\x20DROP INDEX members_old_idx;";
    assert_eq!(
        rules(sql),
        vec![
            ("require-concurrent-index-creation", 2, 1, "members".into()),
            ("adding-foreign-key-constraint", 3, 1, "members".into()),
            ("constraint-missing-not-valid", 4, 1, "members".into()),
            ("disallowed-unique-constraint", 5, 1, "members".into()),
            ("adding-serial-primary-key-field", 5, 1, "members".into()),
            ("changing-column-type", 6, 1, "members".into()),
            ("adding-not-nullable-field", 6, 1, "members".into()),
            ("adding-required-field", 7, 1, "members".into()),
            (
                "require-concurrent-index-deletion",
                8,
                3,
                "members_old_idx".into()
            ),
        ]
    );
}

#[test]
fn the_lock_safe_forms_are_clean() {
    let sql = "ALTER TABLE members ADD CONSTRAINT m_fk FOREIGN KEY (c) REFERENCES coaches (id) NOT VALID;\n\
               ALTER TABLE members ADD CONSTRAINT m_ck CHECK (x > 0) NOT VALID;\n\
               ALTER TABLE members VALIDATE CONSTRAINT m_earlier_fk;\n\
               ALTER TABLE members ADD COLUMN w text NOT NULL DEFAULT '', ADD COLUMN v int;\n\
               ALTER TABLE members ADD CONSTRAINT m_u UNIQUE USING INDEX m_u_idx;\n\
               DROP INDEX CONCURRENTLY IF EXISTS m_old;";
    assert_eq!(rules(sql), vec![]);
}

#[test]
fn set_not_null_needs_the_check_validated_not_just_added() {
    let sql = "ALTER TABLE members ADD CONSTRAINT m_x_nn CHECK (x IS NOT NULL) NOT VALID;\n\
               ALTER TABLE members ALTER COLUMN x SET NOT NULL;";
    assert_eq!(
        rules(sql),
        vec![("adding-not-nullable-field", 2, 1, "members".into())]
    );
}

#[test]
fn concurrently_inside_a_transactional_migration_is_reported() {
    let sql = "CREATE INDEX CONCURRENTLY IF NOT EXISTS m_idx ON members (x);";
    assert_eq!(
        rules(sql),
        vec![(
            "ban-concurrent-index-creation-in-transaction",
            1,
            1,
            "members".into()
        )]
    );
}

#[test]
fn concurrently_in_a_non_transactional_migration_is_what_it_is_for() {
    let body = "CREATE INDEX CONCURRENTLY IF NOT EXISTS m_idx ON members (x);\n\
                DROP INDEX CONCURRENTLY IF EXISTS old_idx;";
    let marked = format!("{}\n{body}", crate::sqlgen::NO_TRANSACTION_MARKER);
    assert_eq!(rules(&marked), vec![]);
    // The same statements without the marker run in a transaction, where Postgres refuses them.
    assert_eq!(
        lint(body).iter().map(|f| f.rule).collect::<Vec<_>>(),
        vec!["ban-concurrent-index-creation-in-transaction"]
    );
}

#[test]
fn words_in_strings_comments_and_bodies_are_not_statements() {
    let sql = "DO $$ BEGIN EXECUTE 'CREATE INDEX i ON members (x)'; END $$;\n\
               COMMENT ON TABLE members IS 'ALTER TABLE members ALTER x TYPE int';\n\
               /* CREATE INDEX j ON members (x); */ SELECT 1;";
    assert_eq!(rules(sql), vec![]);
}

#[test]
fn validating_in_the_transaction_that_added_the_constraint_gains_nothing() {
    // refinery runs the file in one transaction: the ADD's lock is held through the VALIDATE.
    let sql =
        "ALTER TABLE members ADD CONSTRAINT \"m_x_nn\" CHECK (\"x\" IS NOT NULL) NOT VALID;\n\
               ALTER TABLE members VALIDATE CONSTRAINT \"m_x_nn\";\n\
               ALTER TABLE members ALTER COLUMN \"x\" SET NOT NULL;";
    assert_eq!(
        rules(sql),
        vec![("constraint-missing-not-valid", 2, 1, "members".into())]
    );
}

#[test]
fn a_check_validated_by_an_earlier_migration_of_the_run_proves_not_null() {
    let add = "ALTER TABLE members ADD CONSTRAINT x_not_null CHECK (x IS NOT NULL) NOT VALID;";
    let validate = "ALTER TABLE members VALIDATE CONSTRAINT x_not_null;\n\
                    ALTER TABLE members ALTER COLUMN x SET NOT NULL;\n\
                    ALTER TABLE members DROP CONSTRAINT x_not_null;";
    assert_eq!(lint_files(&[add, validate]), vec![vec![], vec![]]);
    // Alone, the second file does not know the check says `x IS NOT NULL`.
    let alone: Vec<_> = lint(validate).into_iter().map(|f| f.rule).collect();
    assert_eq!(alone, vec!["adding-not-nullable-field"]);
}
