"""HTTP and Kafka edges: partner APIs, core outbound, embedded broker and registry. No Faust code here."""
