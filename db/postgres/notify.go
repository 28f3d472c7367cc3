package postgres

// QueueChannel is the channel migration 0005's trigger notifies on for
// every job inserted into cf_processing_queue, with the job's plugin_name
// as the payload. A Sentinel that LISTENs on it learns of jobs other
// processes insert within milliseconds, without polling.
const QueueChannel = "casparian_queue"
