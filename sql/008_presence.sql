-- 008: presence across processes (docs/architecture.md, "Ephemeral events
-- and presence").
--
-- Each server process keeps its users' presence in memory and writes a row
-- here only when a user's state IN THAT PROCESS changes (after its grace
-- period): so the cost grows with presence changes, never with users. A
-- row belongs to a process's LISTEN connection (its backend pid and start
-- time), so the rows of a process that died are found from pg_stat_activity
-- and swept. UNLOGGED: presence is not worth a WAL record, and after a
-- crash of PostgreSQL the table starts empty, which is the truth then.
--
-- A user's global state is the highest of their rows (2 online, 1 away; no
-- row: offline). The functions below change rows and announce a change of
-- the global state with NOTIFY, under a per-user advisory lock, so two
-- processes changing one user's rows at once announce exactly what changed.

CREATE UNLOGGED TABLE presence (
    user_id      bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    server_pid   integer     NOT NULL,
    server_start timestamptz NOT NULL,
    state        smallint    NOT NULL CHECK (state IN (1, 2)),
    PRIMARY KEY (user_id, server_pid, server_start)
);

-- 'p:<user_id>:<online|away|offline>:<User JSON>' on the 'chatterwerks' channel.
CREATE FUNCTION presence_announce(p_user bigint, p_state smallint) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('chatterwerks', 'p:' || u.id || ':'
        || CASE p_state WHEN 2 THEN 'online' WHEN 1 THEN 'away' ELSE 'offline' END || ':'
        || json_build_object('id', u.id, 'username', u.username, 'is_bot', u.is_bot)::text)
    FROM users u WHERE u.id = p_user;
$$;

-- Sets one process's states of some users (0: offline, the row goes) and
-- announces each global change. Users are taken in ascending order, so two
-- callers never deadlock on the advisory locks. Each statement of a plpgsql
-- function sees what committed before it, so after the lock the "before"
-- state is exact. Returns how many global states changed.
CREATE FUNCTION presence_update(
    p_pid integer, p_start timestamptz, p_users bigint[], p_states smallint[]
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_user bigint;
    v_state smallint;
    v_before smallint;
    v_after smallint;
    v_changed integer := 0;
BEGIN
    FOR v_user, v_state IN
        SELECT DISTINCT ON (x.u) x.u, x.s FROM unnest(p_users, p_states) AS x(u, s) ORDER BY x.u
    LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended('chatterwerks:presence:' || v_user, 0));
        SELECT coalesce(max(state), 0) INTO v_before FROM presence WHERE user_id = v_user;
        IF v_state = 0 THEN
            DELETE FROM presence
            WHERE user_id = v_user AND server_pid = p_pid AND server_start = p_start;
        ELSE
            INSERT INTO presence (user_id, server_pid, server_start, state)
            SELECT v_user, p_pid, p_start, v_state
            WHERE EXISTS (SELECT 1 FROM users WHERE id = v_user)
            ON CONFLICT (user_id, server_pid, server_start) DO UPDATE SET state = EXCLUDED.state;
        END IF;
        SELECT coalesce(max(state), 0) INTO v_after FROM presence WHERE user_id = v_user;
        IF v_after <> v_before THEN
            PERFORM presence_announce(v_user, v_after);
            v_changed := v_changed + 1;
        END IF;
    END LOOP;
    RETURN v_changed;
END
$$;

-- Deletes the rows of processes whose LISTEN connection (application name
-- p_app) is gone, and announces the users that went offline or away with
-- them. backend_start is compared when visible (same role), so a pid that
-- PostgreSQL reuses does not keep old rows alive. Returns the rows deleted.
CREATE FUNCTION presence_sweep(p_app text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_pids integer[];
    v_starts timestamptz[];
    v_user bigint;
    v_before smallint;
    v_after smallint;
    v_gone integer;
    v_deleted integer := 0;
BEGIN
    SELECT coalesce(array_agg(pid), '{}'), coalesce(array_agg(backend_start), '{}')
    INTO v_pids, v_starts
    FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = p_app;
    FOR v_user IN
        SELECT DISTINCT p.user_id FROM presence p
        WHERE NOT EXISTS (
            SELECT 1 FROM unnest(v_pids, v_starts) AS a(pid, started)
            WHERE a.pid = p.server_pid AND (a.started IS NULL OR a.started = p.server_start))
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended('chatterwerks:presence:' || v_user, 0));
        SELECT coalesce(max(state), 0) INTO v_before FROM presence WHERE user_id = v_user;
        DELETE FROM presence p
        WHERE p.user_id = v_user AND NOT EXISTS (
            SELECT 1 FROM unnest(v_pids, v_starts) AS a(pid, started)
            WHERE a.pid = p.server_pid AND (a.started IS NULL OR a.started = p.server_start));
        GET DIAGNOSTICS v_gone = ROW_COUNT;
        v_deleted := v_deleted + v_gone;
        SELECT coalesce(max(state), 0) INTO v_after FROM presence WHERE user_id = v_user;
        IF v_after <> v_before THEN
            PERFORM presence_announce(v_user, v_after);
        END IF;
    END LOOP;
    RETURN v_deleted;
END
$$;
