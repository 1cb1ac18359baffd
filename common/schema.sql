-- The schema shared with Ocean's operator-engine (contract section 5), plus our nonce store.
-- Applied by POST /pgsqlinit and by the tests, in one transaction. Every statement is idempotent
-- and upgrades a database created by the original operator-service in place, keeping its rows.
-- Identifiers stay unquoted (lowercase): the engine's queries depend on exactly these names.

-- Two concurrent initialisations queue here instead of racing on CREATE ... IF NOT EXISTS.
SELECT pg_advisory_xact_lock(5061726); -- "OPS" in ASCII, an arbitrary fixed key
-- Building an index on a large jobs table may take longer than a request's statement limit.
SET LOCAL statement_timeout = 0;
-- A request that touches two tables takes provider_nonces (start, stop, delete) or envs
-- (announce) before jobs. An upgrade that took jobs first and one of those later would deadlock
-- with it, so it takes every table it will change up front, in that order: a request waits
-- behind the upgrade, or the upgrade behind the request.
DO $$
BEGIN
    IF to_regclass('provider_nonces') IS NOT NULL THEN
        LOCK TABLE provider_nonces IN ACCESS EXCLUSIVE MODE;
    END IF;
    IF to_regclass('envs') IS NOT NULL THEN
        LOCK TABLE envs IN ACCESS EXCLUSIVE MODE;
    END IF;
    IF to_regclass('jobs') IS NOT NULL THEN
        LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE;
    END IF;
    IF to_regclass('queue_owners') IS NOT NULL THEN  -- after jobs, as its trigger takes it
        LOCK TABLE queue_owners IN ACCESS EXCLUSIVE MODE;
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS jobs (
    agreementId varchar(255) NOT NULL,
    workflowId varchar(255) NOT NULL,
    owner varchar(255),
    status int,
    statusText varchar(255),
    laststatusupdate timestamp without time zone DEFAULT NOW(),
    dateCreated timestamp without time zone DEFAULT NOW(),
    dateFinished timestamp without time zone DEFAULT NULL,
    configlogURL text,
    publishlogURL text,
    algologURL text,
    outputsURL text,
    ddo text,
    namespace varchar(255),
    stopreq smallint DEFAULT 0,
    removed smallint DEFAULT 0,
    workflow text,
    provider varchar(255),
    did varchar(255),
    chainid varchar(255)
);

-- Columns the original added over its releases: a database of any of them gains what it lacks.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS laststatusupdate timestamp without time zone DEFAULT NOW();
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS namespace varchar(255);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS stopreq smallint DEFAULT 0;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS removed smallint DEFAULT 0;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS workflow text;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS provider varchar(255);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS did varchar(255);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS chainid varchar(255);

CREATE UNIQUE INDEX IF NOT EXISTS uniq_agreementId_workflowId ON jobs (agreementId, workflowId);
CREATE INDEX IF NOT EXISTS indx_owner_jobs ON jobs (owner);
CREATE INDEX IF NOT EXISTS jobs_workflowid ON jobs (workflowId);
-- announce() and /runningjobs read only the unfinished few, however many jobs are stored.
CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs (namespace, dateCreated) WHERE status = 1;
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (dateCreated) WHERE dateFinished IS NULL;

-- One unfinished job per agreementId, enforced by the database so that concurrent starts cannot
-- both pass a check. A database that already breaks the rule is reported, never rewritten.
DO $$
DECLARE
    duplicated text;
BEGIN
    IF to_regclass('jobs_one_unfinished_per_agreement') IS NULL THEN
        SELECT string_agg(agreementid, ', ') INTO duplicated FROM (
            SELECT agreementid FROM jobs WHERE dateFinished IS NULL
            GROUP BY agreementid HAVING count(*) > 1 ORDER BY agreementid LIMIT 20
        ) AS d;
        IF duplicated IS NOT NULL THEN
            RAISE EXCEPTION 'several unfinished jobs share an agreementId (%): finish all but one, then run /pgsqlinit again', duplicated;
        END IF;
        CREATE UNIQUE INDEX jobs_one_unfinished_per_agreement
            ON jobs (agreementId) WHERE dateFinished IS NULL;
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS envs (
    namespace varchar(255) NOT NULL,
    status text,
    lastping timestamp without time zone DEFAULT NOW()
);
CREATE UNIQUE INDEX IF NOT EXISTS unique_namespace ON envs (namespace);

-- The engine calls announce() on every ping: record its status, collect the jobs waiting for it,
-- oldest first (the original picked them in no order).
CREATE OR REPLACE FUNCTION announce(environment varchar(255), fullstatus text, lmt int)
  RETURNS TABLE (workflow varchar(255))
  LANGUAGE plpgsql
AS $function$
BEGIN
    INSERT INTO envs (namespace, status, lastping) VALUES (environment, fullstatus, NOW())
        ON CONFLICT (namespace) DO UPDATE SET status = EXCLUDED.status, lastping = EXCLUDED.lastping;
    RETURN QUERY
        SELECT j.workflowid FROM jobs AS j
        WHERE j.namespace = environment AND j.status = 1
        ORDER BY j.datecreated
        LIMIT lmt;
END
$function$;

-- Older engines call the two-argument form: every waiting job, no limit.
CREATE OR REPLACE FUNCTION announce(environment varchar(255), fullstatus text)
  RETURNS TABLE (workflow varchar(255))
  LANGUAGE sql
AS $function$
    SELECT * FROM announce(environment, fullstatus, NULL);
$function$;

-- Our engine's side of the table protocol (contract section 9, "ours"). The original engine
-- claims nothing and leaves these NULL; ours claims a job by writing its id and a lease, which
-- it renews while it runs the job, so that another engine can take over when it dies.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS engine varchar(255);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS leaseuntil timestamp without time zone;
-- Set when the expiry sweep deleted the job's results: getResult answers 410 from then on.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS resultsexpired timestamp without time zone;
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (datefinished) WHERE resultsexpired IS NULL;
-- Set when the service deleted the WorkFlow of a job the original engine ran, at its storage
-- expiry (our engine deletes its own jobs' WorkFlows, and sets resultsexpired).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS workflowdeleted timestamp without time zone;

-- Engines LISTEN: a new job wakes them at once (polling stays the fallback), and a stop
-- reaches the engine running the job within the moment, whatever stage it is in.
CREATE OR REPLACE FUNCTION notify_jobs() RETURNS trigger
  LANGUAGE plpgsql
AS $function$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('jobs_waiting', coalesce(NEW.namespace, ''));
    ELSE
        PERFORM pg_notify('jobs_stop', NEW.workflowid);
    END IF;
    RETURN NULL;
END
$function$;
DROP TRIGGER IF EXISTS jobs_waiting_notify ON jobs;
CREATE TRIGGER jobs_waiting_notify AFTER INSERT ON jobs
    FOR EACH ROW WHEN (NEW.status = 1) EXECUTE FUNCTION notify_jobs();
DROP TRIGGER IF EXISTS jobs_stop_notify ON jobs;
CREATE TRIGGER jobs_stop_notify AFTER UPDATE OF stopreq ON jobs
    FOR EACH ROW WHEN (NEW.stopreq = 1 AND OLD.stopreq IS DISTINCT FROM 1)
    EXECUTE FUNCTION notify_jobs();

-- Replay protection (contract section 2): a nonce is the caller's time.time_ns(), accepted only
-- within NONCE_WINDOW of the service's clock (checked before the insert), and only once per
-- signer: the primary key decides that atomically, with no row every call of one signer
-- contends on. Rows older than the window can never match again and are pruned in batches,
-- off the request path. The original service's `nonces (provider, nonce)` table, where an
-- upgraded database has one, is left as it was: nothing reads it.
CREATE TABLE IF NOT EXISTS provider_nonces (
    signer varchar(42) NOT NULL,
    nonce bigint NOT NULL,
    PRIMARY KEY (signer, nonce)
);
CREATE INDEX IF NOT EXISTS provider_nonces_age ON provider_nonces (nonce);
-- What this service used before the window (a per-signer high-water mark).
DROP FUNCTION IF EXISTS consume_nonce(varchar, numeric, numeric);
DROP TABLE IF EXISTS nonce_marks;

-- The status object of a job (contract section 4), built where the rows are: a status, a stop
-- or /runningjobs gets its answer as one JSON text, and no row is decoded in Python (at 2,000
-- unfinished jobs that cost /runningjobs 100 ms of CPU). The same object the original's
-- Python made: results without their URLs, the DIDs of the workflow's first stage ("raw" and
-- [] where it has none). jsonb, like Python's json module, keeps the last of duplicated keys.
CREATE OR REPLACE FUNCTION json_or_null(raw text) RETURNS jsonb
  LANGUAGE plpgsql IMMUTABLE
AS $function$
BEGIN
    RETURN raw::jsonb;
EXCEPTION WHEN others THEN  -- not JSON: shown as if absent
    RETURN NULL;
END
$function$;

CREATE OR REPLACE FUNCTION job_dids(workflow text) RETURNS jsonb
  LANGUAGE plpgsql IMMUTABLE
AS $function$
DECLARE
    stages jsonb := json_or_null(workflow) -> 'spec' -> 'metadata' -> 'stages';
    stage jsonb := CASE WHEN jsonb_typeof(stages) = 'array' THEN stages -> 0 END;
    algorithm jsonb := stage -> 'algorithm';
    inputs jsonb := stage -> 'input';
    algorithm_id jsonb := algorithm -> 'id';
BEGIN
    -- Where the original's Python stumbled (no first stage, an algorithm that is no object, no
    -- input, or one it cannot iterate), it showed neither DID.
    IF jsonb_typeof(stage) IS DISTINCT FROM 'object'
        OR jsonb_typeof(algorithm) IS DISTINCT FROM 'object'
        OR coalesce(jsonb_typeof(inputs), 'null') IN ('number', 'boolean', 'null') THEN
        RETURN '{"algoDID": "raw", "inputDID": []}';
    END IF;
    RETURN jsonb_build_object(
        -- `id or "raw"`: whatever Python takes for false
        'algoDID', CASE WHEN coalesce(algorithm_id, 'null') IN ('null', '""', '0', 'false', '[]', '{}')
            THEN '"raw"' ELSE algorithm_id END,
        'inputDID', CASE WHEN jsonb_typeof(inputs) = 'array' THEN (
            SELECT coalesce(jsonb_agg(item -> 'id' ORDER BY n), '[]')
            FROM jsonb_array_elements(inputs) WITH ORDINALITY AS listed (item, n)
            WHERE jsonb_typeof(item) = 'object' AND item ? 'id') ELSE '[]' END);
END
$function$;

CREATE OR REPLACE FUNCTION job_results(outputs text, expired boolean) RETURNS jsonb
  LANGUAGE plpgsql IMMUTABLE
AS $function$
DECLARE
    files jsonb;
BEGIN
    -- The files, never their URLs (those stay behind getResult); files the expiry sweep
    -- deleted are still listed, each marked expired; "" when there are none.
    IF outputs IS NULL THEN  -- an unfinished job: nothing to parse
        RETURN '""';
    END IF;
    files := json_or_null(outputs);
    IF jsonb_typeof(files) IS DISTINCT FROM 'array' OR jsonb_array_length(files) = 0 THEN
        RETURN '""';
    END IF;
    RETURN (
        SELECT coalesce(jsonb_agg(
            CASE WHEN expired THEN (file - 'url') || '{"expired": true}' ELSE file - 'url' END
            ORDER BY n), '[]')
        FROM jsonb_array_elements(files) WITH ORDINALITY AS listed (file, n)
        WHERE jsonb_typeof(file) = 'object');
END
$function$;

-- The DIDs are worked out once, when a job is stored (`dids`), not at every look; a finished
-- job stored before the column existed has them worked out from its workflow when asked for,
-- and the unfinished ones, which /runningjobs lists together, get theirs here.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS dids jsonb;
UPDATE jobs SET dids = job_dids(workflow) WHERE dids IS NULL AND dateFinished IS NULL;

-- Fair queues (docs/queues.md). Our engine claims a waiting job for the owner with the fewest
-- running jobs, then the least recent usage, then the oldest waiting job; a job that has waited
-- past the starvation bound goes first whatever its owner. `queue_owners` keeps, per
-- environment and owner, what that order needs, so a claim costs a few index probes however
-- long the queue: the trigger below counts waiting and running jobs (whichever engine moves
-- them), and our engine's finish adds the job's seconds to `usage`. `usage` is log2 of the
-- decayed job seconds referred to the epoch (log2(seconds) + t / half-life): the decay is the
-- same for every owner, so this key orders owners at any time without being rewritten.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS claimedat timestamp without time zone;
CREATE INDEX IF NOT EXISTS jobs_waiting_by_owner ON jobs (namespace, owner, dateCreated)
    WHERE status = 1;
CREATE TABLE IF NOT EXISTS queue_owners (
    namespace varchar(255) NOT NULL,
    owner varchar(255) NOT NULL,
    waiting int NOT NULL DEFAULT 0,
    running int NOT NULL DEFAULT 0,
    head timestamp without time zone,  -- when its oldest waiting job was created
    usage double precision,  -- NULL: none yet
    PRIMARY KEY (namespace, owner)
);
CREATE INDEX IF NOT EXISTS queue_owners_next
    ON queue_owners (namespace, running, usage NULLS FIRST, head) WHERE waiting > 0;

CREATE OR REPLACE FUNCTION queue_state(status int, finished timestamp) RETURNS smallint
  LANGUAGE sql IMMUTABLE
AS $function$
    SELECT CASE WHEN finished IS NOT NULL THEN 0 WHEN status = 1 THEN 1
                WHEN status > 1 THEN 2 ELSE 0 END::smallint;  -- 1 waiting, 2 running
$function$;

CREATE OR REPLACE FUNCTION track_queue_owners() RETURNS trigger
  LANGUAGE plpgsql
AS $function$
DECLARE
    was smallint := 0;
    now_in smallint := queue_state(NEW.status, NEW.datefinished);
BEGIN
    IF TG_OP = 'UPDATE' THEN
        was := queue_state(OLD.status, OLD.datefinished);
    END IF;
    IF was = now_in OR NEW.namespace IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO queue_owners AS q (namespace, owner, waiting, running, head)
    VALUES (NEW.namespace, coalesce(NEW.owner, ''), greatest(0, (now_in = 1)::int),
            greatest(0, (now_in = 2)::int), CASE WHEN now_in = 1 THEN NEW.datecreated END)
    ON CONFLICT (namespace, owner) DO UPDATE SET
        waiting = greatest(0, q.waiting + (now_in = 1)::int - (was = 1)::int),
        running = greatest(0, q.running + (now_in = 2)::int - (was = 2)::int),
        head = CASE
            WHEN now_in = 1 THEN least(q.head, NEW.datecreated)
            WHEN was = 1 AND q.head >= OLD.datecreated THEN (
                SELECT min(j.datecreated) FROM jobs j
                WHERE j.namespace = NEW.namespace AND j.owner = NEW.owner AND j.status = 1
                    AND j.datefinished IS NULL)
            ELSE q.head END;
    RETURN NULL;
END
$function$;
DROP TRIGGER IF EXISTS jobs_queue_owners ON jobs;
CREATE TRIGGER jobs_queue_owners AFTER INSERT OR UPDATE OF status, datefinished ON jobs
    FOR EACH ROW EXECUTE FUNCTION track_queue_owners();
-- Counted afresh at every initialisation (the tables are locked): a database upgraded from
-- the original, or one whose counts a bug skewed, starts right. Usage is kept.
UPDATE queue_owners SET waiting = 0, running = 0, head = NULL;
INSERT INTO queue_owners AS q (namespace, owner, waiting, running, head)
    SELECT namespace, coalesce(owner, ''),
           count(*) FILTER (WHERE queue_state(status, datefinished) = 1),
           count(*) FILTER (WHERE queue_state(status, datefinished) = 2),
           min(datecreated) FILTER (WHERE queue_state(status, datefinished) = 1)
    FROM jobs WHERE datefinished IS NULL AND namespace IS NOT NULL
    GROUP BY namespace, coalesce(owner, '')
    ON CONFLICT (namespace, owner) DO UPDATE SET
        waiting = EXCLUDED.waiting, running = EXCLUDED.running, head = EXCLUDED.head;
DELETE FROM queue_owners WHERE waiting = 0 AND running = 0 AND usage IS NULL;

-- Our engine's claim: up to `lmt` waiting jobs of `ns`, moved to 20 under `me`'s lease, in the
-- fair order. Claims of one environment take turns (an advisory lock), so two engines see each
-- other's claims and `per_owner` (maxJobsPerOwner; NULL: none) holds between them.
CREATE OR REPLACE FUNCTION claim_fairly(
    ns varchar, me varchar, lease double precision, text varchar, lmt int, per_owner int,
    starve double precision)
  RETURNS SETOF jobs
  LANGUAGE plpgsql
AS $function$
DECLARE
    chosen varchar;
    taken int := 0;
    candidate record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('operator-claim:' || ns));
    WHILE taken < lmt LOOP
        chosen := NULL;
        -- A job that has waited past the bound goes first, whatever its owner's usage.
        SELECT j.workflowid INTO chosen FROM jobs j
            LEFT JOIN queue_owners q ON q.namespace = ns AND q.owner = coalesce(j.owner, '')
            WHERE j.namespace = ns AND j.status = 1 AND j.datefinished IS NULL
                AND j.datecreated < NOW() - make_interval(secs => starve)
                AND (per_owner IS NULL OR coalesce(q.running, 0) < per_owner)
            ORDER BY j.datecreated LIMIT 1 FOR UPDATE OF j SKIP LOCKED;
        IF chosen IS NULL THEN
            FOR candidate IN
                SELECT q.owner FROM queue_owners q
                WHERE q.namespace = ns AND q.waiting > 0
                    AND (per_owner IS NULL OR q.running < per_owner)
                ORDER BY q.running, q.usage NULLS FIRST, q.head LIMIT 8
            LOOP
                SELECT j.workflowid INTO chosen FROM jobs j
                    WHERE j.namespace = ns AND j.owner = candidate.owner AND j.status = 1
                        AND j.datefinished IS NULL
                    ORDER BY j.datecreated LIMIT 1 FOR UPDATE SKIP LOCKED;
                EXIT WHEN chosen IS NOT NULL;
            END LOOP;
        END IF;
        EXIT WHEN chosen IS NULL;
        RETURN QUERY
            UPDATE jobs SET status = 20, statustext = text, laststatusupdate = NOW(),
                engine = me, leaseuntil = NOW() + make_interval(secs => lease),
                claimedat = NOW()
            WHERE workflowid = chosen RETURNING jobs.*;
        taken := taken + 1;
    END LOOP;
END
$function$;

-- Where each waiting job of `ns` stands in the fair order, and when it is likely to start:
-- every job ahead takes the next free slot for the expected duration (the environment's
-- maxJobDuration, or the median of its last 50 jobs when smaller), slots freeing as the running
-- jobs reach that duration. The starvation bound comes from the engine's announcement.
CREATE OR REPLACE FUNCTION queue_places(ns varchar)
  RETURNS TABLE (workflowid varchar, place bigint, estimated double precision)
  LANGUAGE sql STABLE
AS $function$
    WITH announced AS (
        SELECT json_or_null(status) AS env FROM envs WHERE namespace = ns
    ), settings AS (
        SELECT coalesce((SELECT (env -> 'fairQueue' ->> 'starvationSeconds')::float8
                         FROM announced), 21600) AS starve,
               greatest(1, coalesce((SELECT (env ->> 'maxJobs')::int FROM announced), 1)) AS slots,
               coalesce((SELECT (env ->> 'maxJobDuration')::float8 FROM announced), 3600)
                   AS longest
    ), recent AS (
        SELECT percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY extract(epoch FROM r.datefinished - r.claimedat)) AS median
        FROM (SELECT j.datefinished, j.claimedat FROM jobs j
              WHERE j.namespace = ns AND j.claimedat IS NOT NULL AND j.datefinished IS NOT NULL
              ORDER BY j.datefinished DESC LIMIT 50) AS r
    ), expected AS (
        SELECT least(s.longest, coalesce(r.median, s.longest)) AS seconds, s.slots, s.starve
        FROM settings s, recent r
    ), remaining AS (
        SELECT coalesce(array_agg(left_s ORDER BY left_s), '{}') AS ends FROM (
            SELECT greatest(0, e.seconds - extract(epoch FROM NOW()::timestamp
                                                   - coalesce(j.claimedat, j.laststatusupdate)))
                   AS left_s
            FROM jobs j, expected e
            WHERE j.namespace = ns AND j.status > 1 AND j.datefinished IS NULL) AS running
    ), offsets AS (
        SELECT (array_fill(0::float8, ARRAY[greatest(0, e.slots - cardinality(r.ends))])
                || r.ends)[1:e.slots] AS free_in, e.seconds, e.slots
        FROM expected e, remaining r
    ), waiting AS (
        SELECT j.workflowid, j.datecreated, coalesce(j.owner, '') AS owner,
               j.datecreated < NOW() - make_interval(secs => e.starve) AS starved
        FROM jobs j, expected e
        WHERE j.namespace = ns AND j.status = 1 AND j.datefinished IS NULL
    ), ranked AS (
        SELECT w.workflowid, w.datecreated, w.starved, q.usage,
               coalesce(q.running, 0) - 1
                   + row_number() OVER (PARTITION BY w.owner, w.starved ORDER BY w.datecreated)
                   AS level
        FROM waiting w LEFT JOIN queue_owners q ON q.namespace = ns AND q.owner = w.owner
    ), placed AS (
        SELECT r.workflowid, row_number() OVER (
                   ORDER BY r.starved DESC, CASE WHEN r.starved THEN r.datecreated END,
                            r.level, r.usage NULLS FIRST, r.datecreated) AS place
        FROM ranked r
    )
    SELECT p.workflowid, p.place,
           extract(epoch FROM NOW()) + o.free_in[((p.place - 1) % o.slots) + 1]
               + ((p.place - 1) / o.slots) * o.seconds
    FROM placed p, offsets o;
$function$;

-- A waiting job's object ends with its place in the fair queue and its likely start (Unix
-- time, as text like dateCreated): keys the original has not, after every key it has.
CREATE OR REPLACE FUNCTION job_status_placed(j jobs, place bigint, estimated float8) RETURNS json
  LANGUAGE sql STABLE
AS $function$
    SELECT CASE WHEN place IS NULL THEN o ELSE (
        left(o::text, -1) || ', "queuePosition" : ' || place
        || ', "estimatedStart" : "' || round(estimated::numeric, 3) || '"}')::json END
    FROM (SELECT json_build_object(
        'agreementId', j.agreementid,
        'jobId', j.workflowid,
        'owner', j.owner,
        'status', j.status,
        'statusText', j.statustext,
        'dateCreated', extract(epoch from j.datecreated)::text,
        'dateFinished', extract(epoch from j.datefinished)::text,
        'results', job_results(j.outputsurl, j.resultsexpired IS NOT NULL),
        'stopreq', j.stopreq,
        'removed', j.removed,
        'algoDID', coalesce(j.dids, job_dids(j.workflow)) -> 'algoDID',
        'inputDID', coalesce(j.dids, job_dids(j.workflow)) -> 'inputDID') AS o) AS built
$function$;

CREATE OR REPLACE FUNCTION job_status(j jobs) RETURNS json
  LANGUAGE sql STABLE
AS $function$
    SELECT job_status_placed(j, q.place, q.estimated)
    FROM (SELECT NULL) AS one
    LEFT JOIN LATERAL (
        SELECT p.place, p.estimated FROM queue_places(j.namespace) AS p
        WHERE j.status = 1 AND j.datefinished IS NULL AND p.workflowid = j.workflowid
    ) AS q ON true
$function$;
