-- Hourly rollups (see<job>Q60): the columns of Q15 per UTC hour, computed
-- exactly from the hour's Q15 rows (see the MariaDB migration 0005).

CREATE TABLE IF NOT EXISTS "see{job}Q60" (
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

CREATE INDEX IF NOT EXISTS "ix_see{job}Q60_bucket" ON "see{job}Q60" (Bucket);
