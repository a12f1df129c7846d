-- 15-minute rollups of Raw (the contract in README "Rollups"), and the
-- buckets whose rollups are due: every write transaction upserts the buckets
-- it touched into Q15Dirty (Version + 1), the rollup task recomputes such a
-- bucket from Raw and removes its marker only if Version did not move
-- meanwhile. Q15 is page-compressed like the compact Raw (bench/storage.py).

CREATE TABLE IF NOT EXISTS `see{job}Q15` (
    idDevice VARCHAR(20) NOT NULL,
    idParam VARCHAR(20) NOT NULL,
    Bucket DATETIME NOT NULL,
    Samples INT NOT NULL,
    Good INT NOT NULL,
    MinValue DOUBLE NULL,
    `MaxValue` DOUBLE NULL,
    MeanValue DOUBLE NULL,
    FirstDate DATETIME(6) NULL,
    FirstValue DOUBLE NULL,
    LastDate DATETIME(6) NULL,
    LastValue DOUBLE NULL,
    Rise DOUBLE NULL,
    Fall DOUBLE NULL,
    Drops INT NOT NULL,
    MaxRise DOUBLE NULL,
    Codes INT NOT NULL,
    PRIMARY KEY (idDevice, idParam, Bucket),
    KEY ix_bucket (Bucket)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin PAGE_COMPRESSED=1;

CREATE TABLE IF NOT EXISTS `see{job}Q15Dirty` (
    Bucket DATETIME NOT NULL,
    Version BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (Bucket)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Rows written before rollups existed: every bucket they cover is due once.
-- GROUP BY over the Date index (ix_date of the seed-era and 0001 layouts).
INSERT IGNORE INTO `see{job}Q15Dirty` (Bucket, Version)
SELECT TIMESTAMPADD(MINUTE, TIMESTAMPDIFF(MINUTE, '1970-01-01', `Date`) DIV 15 * 15, '1970-01-01'), 1
FROM `see{job}Raw`
GROUP BY 1;
