-- The susee tables for SQLite: same names and keys as on MariaDB.
-- Date is TEXT 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC): fixed width, so text order is time order.

CREATE TABLE IF NOT EXISTS "see{job}Raw" (
    idNum INTEGER PRIMARY KEY AUTOINCREMENT,
    idDevice VARCHAR(20) NOT NULL,
    Date TEXT NOT NULL,
    idParam VARCHAR(20) NOT NULL,
    Value DOUBLE,
    Delay FLOAT,
    Code INTEGER NOT NULL,
    CONSTRAINT uq_sample UNIQUE (idDevice, idParam, Date)
);

-- SQLite index names are per database, not per table: they carry the job id.
CREATE INDEX IF NOT EXISTS "ix_see{job}Raw_date" ON "see{job}Raw" (Date);

CREATE TABLE IF NOT EXISTS "see{job}Last" (
    idNum INTEGER PRIMARY KEY AUTOINCREMENT,
    idDevice VARCHAR(20) NOT NULL,
    Date TEXT NOT NULL,
    idParam VARCHAR(20) NOT NULL,
    Value DOUBLE,
    Delay FLOAT,
    Code INTEGER NOT NULL,
    CONSTRAINT uq_device_param UNIQUE (idDevice, idParam)
);

CREATE TABLE IF NOT EXISTS "see{job}Params" (
    idNum INTEGER PRIMARY KEY AUTOINCREMENT,
    idParam VARCHAR(20),
    descrITA VARCHAR(255),
    descrENG VARCHAR(255),
    um VARCHAR(10),
    Acronimo VARCHAR(30),
    CONSTRAINT uq_param UNIQUE (idParam)
);

CREATE TABLE IF NOT EXISTS "see{job}SchemaVersion" (
    version INTEGER PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    applied_at TEXT NOT NULL
);
