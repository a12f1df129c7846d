-- Daily rollups (see<job>Day, DayGap, DaySpec): see the MariaDB migration 0006.

CREATE TABLE IF NOT EXISTS "see{job}Day" (
    idDevice VARCHAR(20) NOT NULL,
    idParam VARCHAR(20) NOT NULL,
    Day TEXT NOT NULL,
    Band INTEGER NOT NULL,
    Energy DOUBLE NOT NULL,
    Magnitude DOUBLE NOT NULL,
    Known INTEGER NOT NULL,
    Good INTEGER NOT NULL,
    Codes INTEGER NOT NULL,
    Flags INTEGER NOT NULL,
    Peak DOUBLE,
    PeakAt INTEGER,
    Packed BLOB NOT NULL,
    PRIMARY KEY (idDevice, idParam, Day, Band)
);

CREATE TABLE IF NOT EXISTS "see{job}DayGap" (
    idDevice VARCHAR(20) NOT NULL,
    idParam VARCHAR(20) NOT NULL,
    T0 DOUBLE NOT NULL,
    T1 DOUBLE NOT NULL,
    Delta DOUBLE NOT NULL,
    PRIMARY KEY (idDevice, idParam, T0)
);

CREATE TABLE IF NOT EXISTS "see{job}DaySpec" (
    idDevice VARCHAR(20) NOT NULL,
    idParam VARCHAR(20) NOT NULL,
    Spec VARCHAR(64) NOT NULL,
    FromDay TEXT NOT NULL,
    ToDay TEXT NOT NULL,
    PRIMARY KEY (idDevice, idParam)
);

CREATE TABLE IF NOT EXISTS "see{job}DayDirty" (
    Bucket TEXT NOT NULL PRIMARY KEY,
    Version INTEGER NOT NULL
);
