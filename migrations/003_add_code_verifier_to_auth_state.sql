-- StarPunk v0.8.0: PKCE. StarPunk's own tracker called this
-- 001_add_code_verifier_to_auth_state.sql.
ALTER TABLE auth_state ADD COLUMN code_verifier TEXT;
