"""56 migrations shaped like a password manager's SQLite history (Vaultwarden's is the model).

Written for this benchmark, not copied from any project: the same mix of work over the
same span of years, where a fresh build's time goes. 26 tables created, ADD COLUMNs,
indexes, and SQLite's 12-step table rebuilds (CREATE ..._new, INSERT ... SELECT, DROP,
ALTER TABLE ... RENAME) for the changes ALTER TABLE cannot make, and UPDATEs that
backfill new columns (on a fresh database, over empty tables).
"""

from __future__ import annotations


def _rebuild(table: str, columns: str, keep: str) -> str:
    """SQLite's way to change a column's type or constraint: copy into a new table."""
    return (
        f"CREATE TABLE {table}_new ({columns});\n"
        f"INSERT INTO {table}_new ({keep}) SELECT {keep} FROM {table};\n"
        f"DROP TABLE {table};\n"
        f"ALTER TABLE {table}_new RENAME TO {table};\n"
    )


USERS = (
    "uuid TEXT NOT NULL PRIMARY KEY, created_at DATETIME NOT NULL, updated_at DATETIME "
    "NOT NULL, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL, password_hash BLOB NOT NULL, "
    "salt BLOB NOT NULL, password_iterations INTEGER NOT NULL, password_hint TEXT, akey TEXT "
    "NOT NULL, private_key TEXT, public_key TEXT, totp_secret TEXT, security_stamp TEXT NOT "
    "NULL, equivalent_domains TEXT NOT NULL DEFAULT '[]', excluded_globals TEXT NOT NULL "
    "DEFAULT '[]'"
)
# The users table when it is rebuilt without its old TOTP columns (moved to twofactor).
USERS_LATER = (
    "uuid TEXT NOT NULL PRIMARY KEY, enabled BOOLEAN NOT NULL DEFAULT 1, created_at DATETIME "
    "NOT NULL, updated_at DATETIME NOT NULL, verified_at DATETIME, last_verifying_at "
    "DATETIME, login_verify_count INTEGER NOT NULL DEFAULT 0, email TEXT NOT NULL UNIQUE, "
    "email_new TEXT, email_new_token TEXT, name TEXT NOT NULL, password_hash BLOB NOT NULL, "
    "salt BLOB NOT NULL, password_iterations INTEGER NOT NULL, password_hint TEXT, akey TEXT "
    "NOT NULL, private_key TEXT, public_key TEXT, security_stamp TEXT NOT NULL, "
    "stamp_exception TEXT, equivalent_domains TEXT NOT NULL DEFAULT '[]', excluded_globals "
    "TEXT NOT NULL DEFAULT '[]', client_kdf_type INTEGER NOT NULL DEFAULT 0, client_kdf_iter "
    "INTEGER NOT NULL DEFAULT 100000, api_key TEXT, avatar_color TEXT"
)
USER_KEEP = (
    "uuid, enabled, created_at, updated_at, verified_at, last_verifying_at, "
    "login_verify_count, email, email_new, email_new_token, name, password_hash, salt, "
    "password_iterations, password_hint, akey, private_key, public_key, security_stamp, "
    "stamp_exception, equivalent_domains, excluded_globals, client_kdf_type, "
    "client_kdf_iter, api_key, avatar_color"
)
CIPHERS = (
    "uuid TEXT NOT NULL PRIMARY KEY, created_at DATETIME NOT NULL, updated_at DATETIME NOT "
    "NULL, user_uuid TEXT REFERENCES users (uuid), organization_uuid TEXT REFERENCES "
    "organizations (uuid), atype INTEGER NOT NULL, name TEXT NOT NULL, notes TEXT, fields "
    "TEXT, data TEXT NOT NULL, favorite BOOLEAN NOT NULL DEFAULT 0, password_history TEXT"
)
CIPHER_KEEP = (
    "uuid, created_at, updated_at, user_uuid, organization_uuid, atype, name, notes, "
    "fields, data, favorite, password_history"
)


def migrations() -> list[tuple[str, str]]:
    """(label, SQL) in order: 56 of them."""
    m: list[tuple[str, str]] = [
        (
            "create_initial_tables",
            f"CREATE TABLE users ({USERS});\n"
            "CREATE TABLE devices (uuid TEXT NOT NULL PRIMARY KEY, created_at DATETIME NOT "
            "NULL, updated_at DATETIME NOT NULL, user_uuid TEXT NOT NULL REFERENCES users "
            "(uuid), name TEXT NOT NULL, atype INTEGER NOT NULL, push_token TEXT, "
            "refresh_token TEXT NOT NULL);\n"
            "CREATE TABLE folders (uuid TEXT NOT NULL PRIMARY KEY, created_at DATETIME NOT "
            "NULL, updated_at DATETIME NOT NULL, user_uuid TEXT NOT NULL REFERENCES users "
            "(uuid), name TEXT NOT NULL);\n"
            "CREATE TABLE ciphers (uuid TEXT NOT NULL PRIMARY KEY, created_at DATETIME NOT "
            "NULL, updated_at DATETIME NOT NULL, user_uuid TEXT NOT NULL REFERENCES users "
            "(uuid), folder_uuid TEXT REFERENCES folders (uuid), organization_uuid TEXT, "
            "atype INTEGER NOT NULL, data TEXT NOT NULL, favorite BOOLEAN NOT NULL);\n"
            "CREATE TABLE attachments (id TEXT NOT NULL PRIMARY KEY, cipher_uuid TEXT NOT "
            "NULL REFERENCES ciphers (uuid), file_name TEXT NOT NULL, file_size INTEGER NOT "
            "NULL);\n",
        ),
        (
            "create_folders_ciphers",
            "CREATE TABLE folders_ciphers (cipher_uuid TEXT NOT NULL REFERENCES ciphers "
            "(uuid), folder_uuid TEXT NOT NULL REFERENCES folders (uuid), PRIMARY KEY "
            "(cipher_uuid, folder_uuid));\n"
            "INSERT INTO folders_ciphers (cipher_uuid, folder_uuid) SELECT uuid, folder_uuid "
            "FROM ciphers WHERE folder_uuid IS NOT NULL;\n",
        ),
        ("add_users_totp_recover", "ALTER TABLE users ADD COLUMN totp_recover TEXT;\n"),
        (
            "create_organizations",
            "CREATE TABLE organizations (uuid TEXT NOT NULL PRIMARY KEY, name TEXT NOT NULL, "
            "billing_email TEXT NOT NULL);\n"
            "CREATE TABLE users_organizations (uuid TEXT NOT NULL PRIMARY KEY, user_uuid TEXT "
            "NOT NULL REFERENCES users (uuid), org_uuid TEXT NOT NULL REFERENCES "
            "organizations (uuid), access_all BOOLEAN NOT NULL, akey TEXT NOT NULL, status "
            "INTEGER NOT NULL, atype INTEGER NOT NULL, UNIQUE (user_uuid, org_uuid));\n",
        ),
        (
            "create_collections",
            "CREATE TABLE collections (uuid TEXT NOT NULL PRIMARY KEY, org_uuid TEXT NOT NULL "
            "REFERENCES organizations (uuid), name TEXT NOT NULL);\n"
            "CREATE TABLE users_collections (user_uuid TEXT NOT NULL REFERENCES users (uuid), "
            "collection_uuid TEXT NOT NULL REFERENCES collections (uuid), PRIMARY KEY "
            "(user_uuid, collection_uuid));\n"
            "CREATE TABLE ciphers_collections (cipher_uuid TEXT NOT NULL REFERENCES ciphers "
            "(uuid), collection_uuid TEXT NOT NULL REFERENCES collections (uuid), PRIMARY KEY "
            "(cipher_uuid, collection_uuid));\n",
        ),
        (
            "rebuild_ciphers_drop_folder",
            _rebuild(
                "ciphers",
                "uuid TEXT NOT NULL PRIMARY KEY, created_at DATETIME NOT NULL, updated_at "
                "DATETIME NOT NULL, user_uuid TEXT REFERENCES users (uuid), organization_uuid "
                "TEXT REFERENCES organizations (uuid), atype INTEGER NOT NULL, data TEXT NOT "
                "NULL, favorite BOOLEAN NOT NULL",
                "uuid, created_at, updated_at, user_uuid, organization_uuid, atype, data, favorite",
            ),
        ),
        (
            "add_users_collections_read_only",
            "ALTER TABLE users_collections ADD COLUMN read_only BOOLEAN NOT NULL DEFAULT 0;\n",
        ),
        (
            "create_twofactor",
            "CREATE TABLE twofactor (uuid TEXT NOT NULL PRIMARY KEY, user_uuid TEXT NOT NULL "
            "REFERENCES users (uuid), atype INTEGER NOT NULL, enabled BOOLEAN NOT NULL, data "
            "TEXT NOT NULL, UNIQUE (user_uuid, atype));\n"
            "INSERT INTO twofactor (uuid, user_uuid, atype, enabled, data) SELECT "
            "lower(hex(randomblob(16))), uuid, 0, 1, totp_secret FROM users WHERE totp_secret "
            "IS NOT NULL;\n"
            "UPDATE users SET totp_secret = NULL;\n",
        ),
        (
            "add_attachments_akey",
            "ALTER TABLE attachments ADD COLUMN akey TEXT;\n",
        ),
        (
            "create_invitations",
            "CREATE TABLE invitations (email TEXT NOT NULL PRIMARY KEY);\n",
        ),
        (
            "add_ciphers_fields",
            "ALTER TABLE ciphers ADD COLUMN name TEXT NOT NULL DEFAULT '';\n"
            "ALTER TABLE ciphers ADD COLUMN notes TEXT;\n"
            "ALTER TABLE ciphers ADD COLUMN fields TEXT;\n",
        ),
        (
            "add_ciphers_password_history",
            "ALTER TABLE ciphers ADD COLUMN password_history TEXT;\n",
        ),
        (
            "add_users_kdf",
            "ALTER TABLE users ADD COLUMN client_kdf_type INTEGER NOT NULL DEFAULT 0;\n"
            "ALTER TABLE users ADD COLUMN client_kdf_iter INTEGER NOT NULL DEFAULT 100000;\n",
        ),
        (
            "create_org_policies",
            "CREATE TABLE org_policies (uuid TEXT NOT NULL PRIMARY KEY, org_uuid TEXT NOT NULL "
            "REFERENCES organizations (uuid), atype INTEGER NOT NULL, enabled BOOLEAN NOT "
            "NULL, data TEXT NOT NULL, UNIQUE (org_uuid, atype));\n",
        ),
        (
            "add_twofactor_last_used",
            "ALTER TABLE twofactor ADD COLUMN last_used INTEGER NOT NULL DEFAULT 0;\n",
        ),
        (
            "add_users_verified_at",
            "ALTER TABLE users ADD COLUMN verified_at DATETIME;\n"
            "ALTER TABLE users ADD COLUMN last_verifying_at DATETIME;\n"
            "ALTER TABLE users ADD COLUMN login_verify_count INTEGER NOT NULL DEFAULT 0;\n",
        ),
        (
            "add_users_email_new",
            "ALTER TABLE users ADD COLUMN email_new TEXT;\n"
            "ALTER TABLE users ADD COLUMN email_new_token TEXT;\n",
        ),
        (
            "add_collections_hide_passwords",
            "ALTER TABLE users_collections ADD COLUMN hide_passwords BOOLEAN NOT NULL DEFAULT 0;\n",
        ),
        ("add_users_enabled", "ALTER TABLE users ADD COLUMN enabled BOOLEAN NOT NULL DEFAULT 1;\n"),
        (
            "rebuild_ciphers_folder_free",
            _rebuild("ciphers", CIPHERS, CIPHER_KEEP),
        ),
        (
            "add_ciphers_deleted_at",
            "ALTER TABLE ciphers ADD COLUMN deleted_at DATETIME;\n",
        ),
        (
            "add_users_stamp_exception",
            "ALTER TABLE users ADD COLUMN stamp_exception TEXT DEFAULT NULL;\n",
        ),
        (
            "create_sends",
            "CREATE TABLE sends (uuid TEXT NOT NULL PRIMARY KEY, user_uuid TEXT REFERENCES "
            "users (uuid), organization_uuid TEXT REFERENCES organizations (uuid), name TEXT "
            "NOT NULL, notes TEXT, atype INTEGER NOT NULL, data TEXT NOT NULL, key TEXT NOT "
            "NULL, password_hash BLOB, password_salt BLOB, password_iter INTEGER, max_access_"
            "count INTEGER, access_count INTEGER NOT NULL, creation_date DATETIME NOT NULL, "
            "revision_date DATETIME NOT NULL, expiration_date DATETIME, deletion_date DATETIME "
            "NOT NULL, disabled BOOLEAN NOT NULL);\n",
        ),
        (
            "add_sends_hide_email",
            "ALTER TABLE sends ADD COLUMN hide_email BOOLEAN;\n",
        ),
        (
            "add_users_api_key",
            "ALTER TABLE users ADD COLUMN api_key TEXT;\n",
        ),
        (
            "create_emergency_access",
            "CREATE TABLE emergency_access (uuid TEXT NOT NULL PRIMARY KEY, grantor_uuid TEXT "
            "REFERENCES users (uuid), grantee_uuid TEXT REFERENCES users (uuid), email TEXT, "
            "key_encrypted TEXT, atype INTEGER NOT NULL, status INTEGER NOT NULL, wait_time_"
            "days INTEGER NOT NULL, recovery_initiated_at DATETIME, last_notification_at "
            "DATETIME, updated_at DATETIME NOT NULL, created_at DATETIME NOT NULL);\n",
        ),
        (
            "create_twofactor_incomplete",
            "CREATE TABLE twofactor_incomplete (user_uuid TEXT NOT NULL REFERENCES users "
            "(uuid), device_uuid TEXT NOT NULL, device_name TEXT NOT NULL, login_time DATETIME "
            "NOT NULL, ip_address TEXT NOT NULL, PRIMARY KEY (user_uuid, device_uuid));\n",
        ),
        (
            "add_users_avatar_color",
            "ALTER TABLE users ADD COLUMN avatar_color TEXT;\n",
        ),
        (
            "add_org_reset_password_key",
            "ALTER TABLE users_organizations ADD COLUMN reset_password_key TEXT;\n",
        ),
        (
            "create_event",
            "CREATE TABLE event (uuid TEXT NOT NULL PRIMARY KEY, event_type INTEGER NOT NULL, "
            "user_uuid TEXT, org_uuid TEXT, cipher_uuid TEXT, collection_uuid TEXT, "
            "group_uuid TEXT, org_user_uuid TEXT, act_user_uuid TEXT, device_type INTEGER, "
            "ip_address TEXT, event_date DATETIME NOT NULL, policy_uuid TEXT, provider_uuid "
            "TEXT, provider_user_uuid TEXT, provider_org_uuid TEXT, UNIQUE (uuid));\n",
        ),
        (
            "add_organizations_keys",
            "ALTER TABLE organizations ADD COLUMN private_key TEXT;\n"
            "ALTER TABLE organizations ADD COLUMN public_key TEXT;\n",
        ),
        (
            "create_groups",
            "CREATE TABLE groups (uuid TEXT NOT NULL PRIMARY KEY, organizations_uuid TEXT NOT "
            "NULL REFERENCES organizations (uuid), name TEXT NOT NULL, access_all BOOLEAN NOT "
            "NULL, external_id TEXT, creation_date DATETIME NOT NULL, revision_date DATETIME "
            "NOT NULL);\n"
            "CREATE TABLE groups_users (groups_uuid TEXT NOT NULL REFERENCES groups (uuid), "
            "users_organizations_uuid TEXT NOT NULL REFERENCES users_organizations (uuid), "
            "UNIQUE (groups_uuid, users_organizations_uuid));\n"
            "CREATE TABLE collections_groups (collections_uuid TEXT NOT NULL REFERENCES "
            "collections (uuid), groups_uuid TEXT NOT NULL REFERENCES groups (uuid), "
            "read_only BOOLEAN NOT NULL, hide_passwords BOOLEAN NOT NULL, UNIQUE "
            "(collections_uuid, groups_uuid));\n",
        ),
        (
            "add_ciphers_reprompt",
            "ALTER TABLE ciphers ADD COLUMN reprompt INTEGER;\n",
        ),
        (
            "rebuild_sends_user_nullable",
            _rebuild(
                "sends",
                "uuid TEXT NOT NULL PRIMARY KEY, user_uuid TEXT REFERENCES users (uuid), "
                "organization_uuid TEXT REFERENCES organizations (uuid), name TEXT NOT NULL, "
                "notes TEXT, atype INTEGER NOT NULL, data TEXT NOT NULL, akey TEXT NOT NULL, "
                "password_hash BLOB, password_salt BLOB, password_iter INTEGER, "
                "max_access_count INTEGER, access_count INTEGER NOT NULL, creation_date "
                "DATETIME NOT NULL, revision_date DATETIME NOT NULL, expiration_date DATETIME, "
                "deletion_date DATETIME NOT NULL, disabled BOOLEAN NOT NULL, hide_email BOOLEAN",
                "uuid, user_uuid, organization_uuid, name, notes, atype, data, password_hash, "
                "password_salt, password_iter, access_count, creation_date, revision_date, "
                "expiration_date, deletion_date, disabled, hide_email",
            ),
        ),
        (
            "add_users_external_id",
            "ALTER TABLE users_organizations ADD COLUMN external_id TEXT;\n",
        ),
        (
            "create_auth_requests",
            "CREATE TABLE auth_requests (uuid TEXT NOT NULL PRIMARY KEY, user_uuid TEXT NOT "
            "NULL REFERENCES users (uuid), organization_uuid TEXT REFERENCES organizations "
            "(uuid), request_device_identifier TEXT NOT NULL, device_type INTEGER NOT NULL, "
            "request_ip TEXT NOT NULL, response_device_id TEXT, access_code TEXT NOT NULL, "
            "public_key TEXT NOT NULL, enc_key TEXT, master_password_hash TEXT, approved "
            "BOOLEAN, creation_date DATETIME NOT NULL, response_date DATETIME, "
            "authentication_date DATETIME);\n",
        ),
        (
            "rebuild_users_drop_totp",
            _rebuild("users", USERS_LATER, USER_KEEP)
            + "CREATE INDEX users_email_idx ON users (email);\n",
        ),
        (
            "add_users_kdf_memory",
            "ALTER TABLE users ADD COLUMN client_kdf_memory INTEGER DEFAULT NULL;\n"
            "ALTER TABLE users ADD COLUMN client_kdf_parallelism INTEGER DEFAULT NULL;\n",
        ),
        (
            "backfill_users_verified",
            "UPDATE users SET verified_at = created_at WHERE verified_at IS NULL;\n",
        ),
        (
            "add_devices_trust",
            "ALTER TABLE devices ADD COLUMN encrypted_user_key TEXT;\n"
            "ALTER TABLE devices ADD COLUMN encrypted_public_key TEXT;\n"
            "ALTER TABLE devices ADD COLUMN encrypted_private_key TEXT;\n",
        ),
        (
            "index_ciphers_user",
            "CREATE INDEX ciphers_user_uuid_idx ON ciphers (user_uuid);\n"
            "CREATE INDEX ciphers_organization_uuid_idx ON ciphers (organization_uuid);\n",
        ),
        (
            "index_devices_user",
            "CREATE INDEX devices_user_uuid_idx ON devices (user_uuid);\n"
            "CREATE UNIQUE INDEX devices_refresh_token_idx ON devices (refresh_token);\n",
        ),
        (
            "index_folders_user",
            "CREATE INDEX folders_user_uuid_idx ON folders (user_uuid);\n"
            "CREATE INDEX users_organizations_org_idx ON users_organizations (org_uuid);\n",
        ),
        (
            "add_users_external_id_users",
            "ALTER TABLE users ADD COLUMN external_id TEXT;\n",
        ),
        (
            "add_org_api_key",
            "CREATE TABLE organization_api_key (uuid TEXT NOT NULL, org_uuid TEXT NOT NULL "
            "REFERENCES organizations (uuid), atype INTEGER NOT NULL, api_key TEXT NOT NULL, "
            "revision_date DATETIME NOT NULL, PRIMARY KEY (uuid, org_uuid));\n",
        ),
        (
            "add_ciphers_key",
            "ALTER TABLE ciphers ADD COLUMN key TEXT;\n",
        ),
        (
            "add_collections_external_id",
            "ALTER TABLE collections ADD COLUMN external_id TEXT;\n",
        ),
        (
            "add_collections_manage",
            "ALTER TABLE users_collections ADD COLUMN manage BOOLEAN NOT NULL DEFAULT 0;\n"
            "ALTER TABLE collections_groups ADD COLUMN manage BOOLEAN NOT NULL DEFAULT 0;\n",
        ),
        (
            "add_twofactor_duo_ctx",
            "CREATE TABLE twofactor_duo_ctx (state TEXT NOT NULL, user_email TEXT NOT NULL, "
            "nonce TEXT NOT NULL, exp INTEGER NOT NULL, PRIMARY KEY (state));\n",
        ),
        (
            "index_events",
            "CREATE INDEX event_date_idx ON event (event_date);\n"
            "CREATE INDEX event_org_idx ON event (org_uuid, event_date);\n",
        ),
        (
            "backfill_kdf_iterations",
            "UPDATE users SET client_kdf_iter = 600000 WHERE client_kdf_type = 0 AND "
            "client_kdf_iter < 600000;\n",
        ),
        (
            "add_sso_nonce",
            "CREATE TABLE sso_nonce (state TEXT NOT NULL PRIMARY KEY, nonce TEXT NOT NULL, "
            "verifier TEXT, redirect_uri TEXT NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT "
            "CURRENT_TIMESTAMP);\n",
        ),
        (
            "add_sso_users",
            "CREATE TABLE sso_users (user_uuid TEXT NOT NULL PRIMARY KEY REFERENCES users "
            "(uuid), identifier TEXT NOT NULL UNIQUE, created_at TIMESTAMP NOT NULL DEFAULT "
            "CURRENT_TIMESTAMP);\n",
        ),
        (
            "index_sso_users",
            "CREATE INDEX sso_users_identifier_idx ON sso_users (identifier);\n",
        ),
        (
            "add_org_user_revision",
            "ALTER TABLE users_organizations ADD COLUMN revision_date DATETIME;\n"
            "UPDATE users_organizations SET revision_date = CURRENT_TIMESTAMP;\n",
        ),
        (
            "add_attachments_index",
            "CREATE INDEX attachments_cipher_uuid_idx ON attachments (cipher_uuid);\n",
        ),
    ]
    return m
