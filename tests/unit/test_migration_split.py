"""The migration runner splits a file into its statements (sqlparse), comments dropped."""

from __future__ import annotations

from services.common.clickhouse import Migration, load_migrations


def test_a_trailing_comment_does_not_glue_two_statements() -> None:
    sql = (
        "-- header\n"
        "CREATE TABLE a (x Int8) ENGINE = Memory; -- a comment after the semicolon\n"
        "CREATE TABLE b (y String DEFAULT ';') ENGINE = Memory;\n"
        "ALTER TABLE a ADD COLUMN z Int8 -- no semicolon before this comment\n"
        ";\n-- trailing comment\n"
    )
    assert Migration(1, "m", sql).statements() == [
        "CREATE TABLE a (x Int8) ENGINE = Memory",
        "CREATE TABLE b (y String DEFAULT ';') ENGINE = Memory",
        "ALTER TABLE a ADD COLUMN z Int8",
    ]


def test_statements_on_one_line_are_separate() -> None:
    stmts = Migration(1, "m", "SELECT 1; SELECT 2;").statements()
    assert stmts == ["SELECT 1", "SELECT 2"]


def test_every_shipped_migration_splits_into_create_or_alter_statements() -> None:
    for migration in load_migrations():
        for stmt in migration.statements():
            assert stmt.split()[0].upper() in {"CREATE", "ALTER"}, (migration.name, stmt)
            assert "--" not in stmt
