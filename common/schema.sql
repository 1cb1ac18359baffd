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

CREATE OR REPLACE FUNCTION job_status(j jobs) RETURNS json
  LANGUAGE sql STABLE
AS $function$
    SELECT json_build_object(
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
        'inputDID', coalesce(j.dids, job_dids(j.workflow)) -> 'inputDID')
$function$;
