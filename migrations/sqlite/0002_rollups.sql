-- 15-minute rollups of Raw and the buckets whose rollups are due (see the
-- MariaDB migration 0003). Bucket is TEXT 'YYYY-MM-DD HH:MM:SS' (UTC).

CREATE TABLE IF NOT EXISTS "see{job}Q15" (
    idDevice VARCHAR(20) NOT NULL,
    idParam VARCHAR(20) NOT NULL,
    Bucket TEXT NOT NULL,
    Samples INTEGER NOT NULL,
    Good INTEGER NOT NULL,
    MinValue DOUBLE,
    MaxValue DOUBLE,
    MeanValue DOUBLE,
    FirstDate TEXT,
    FirstValue DOUBLE,
    LastDate TEXT,
    LastValue DOUBLE,
    Rise DOUBLE,
    Fall DOUBLE,
    Drops INTEGER NOT NULL,
    MaxRise DOUBLE,
    Codes INTEGER NOT NULL,
    PRIMARY KEY (idDevice, idParam, Bucket)
);

CREATE INDEX IF NOT EXISTS "ix_see{job}Q15_bucket" ON "see{job}Q15" (Bucket);

CREATE TABLE IF NOT EXISTS "see{job}Q15Dirty" (
    Bucket TEXT NOT NULL PRIMARY KEY,
    Version INTEGER NOT NULL
);

INSERT OR IGNORE INTO "see{job}Q15Dirty" (Bucket, Version)
SELECT DISTINCT substr(Date, 1, 14) || printf('%02d', CAST(substr(Date, 15, 2) AS INTEGER) / 15 * 15) || ':00', 1
FROM "see{job}Raw";
