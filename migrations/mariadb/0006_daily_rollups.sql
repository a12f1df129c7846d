-- Daily rollups (see<job>Day): what the daily and monthly report needs per
-- meter counter, local day (the site's timezone) and tariff band (index into
-- the site tariff's bands; 0 when the site has none), computed by the
-- report's own counter arithmetic from Q15 (susee.report.days). A year of
-- 1,000 meters is ~1 M rows instead of 35 M Q15 rows.
-- see<job>DayGap keeps the gaps whose energy was apportioned (the report
-- decides per interval whether that share is estimated), see<job>DaySpec
-- per counter what the rows were built for (time zone, tariff, counter
-- rules) and which days they cover. Packed holds the row's values again as
-- 10 little-endian doubles (day since 1970, band, then Energy .. PeakAt, NaN
-- for NULL): a report reads a year of a counter as one GROUP_CONCAT of them,
-- which the server copies instead of formatting ~10 M doubles as text.

CREATE TABLE IF NOT EXISTS `see{job}Day` (
    idDevice VARCHAR(20) NOT NULL,
    idParam VARCHAR(20) NOT NULL,
    `Day` DATE NOT NULL,
    Band SMALLINT NOT NULL,
    Energy DOUBLE NOT NULL,
    Magnitude DOUBLE NOT NULL,
    Known INT NOT NULL,
    Good INT NOT NULL,
    Codes INT NOT NULL,
    Flags INT NOT NULL,
    Peak DOUBLE NULL,
    PeakAt BIGINT NULL,
    Packed BINARY(80) NOT NULL,
    PRIMARY KEY (idDevice, idParam, `Day`, Band)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin PAGE_COMPRESSED=1;

CREATE TABLE IF NOT EXISTS `see{job}DayGap` (
    idDevice VARCHAR(20) NOT NULL,
    idParam VARCHAR(20) NOT NULL,
    T0 DOUBLE NOT NULL,
    T1 DOUBLE NOT NULL,
    Delta DOUBLE NOT NULL,
    PRIMARY KEY (idDevice, idParam, T0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS `see{job}DaySpec` (
    idDevice VARCHAR(20) NOT NULL,
    idParam VARCHAR(20) NOT NULL,
    Spec VARCHAR(64) NOT NULL,
    FromDay DATE NOT NULL,
    ToDay DATE NOT NULL,
    PRIMARY KEY (idDevice, idParam)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Buckets whose Q15 rows the service recomputed and whose days are still to
-- rebuild: marked in the recomputation's transaction (Version + 1), removed
-- once their days are rebuilt unless marked again meanwhile. A stop or a
-- crash in between leaves them marked: the next start rebuilds those days.
CREATE TABLE IF NOT EXISTS `see{job}DayDirty` (
    Bucket DATETIME NOT NULL,
    Version BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (Bucket)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
