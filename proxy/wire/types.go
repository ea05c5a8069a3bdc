package wire

// Message type bytes, named per direction: the same byte means different
// messages each way ('E' is Execute from a client and ErrorResponse from a
// server; 'C' is Close and CommandComplete; 'D' is Describe and DataRow).

// Frontend message types: what a client sends.
const (
	FeBind         byte = 'B'
	FeClose        byte = 'C'
	FeDescribe     byte = 'D'
	FeExecute      byte = 'E'
	FeFunctionCall byte = 'F'
	FeFlush        byte = 'H'
	FeParse        byte = 'P'
	FeQuery        byte = 'Q'
	FeSync         byte = 'S'
	FeTerminate    byte = 'X'
	FeCopyData     byte = 'd'
	FeCopyDone     byte = 'c'
	FeCopyFail     byte = 'f'
	FePassword     byte = 'p' // PasswordMessage, SASLInitialResponse, SASLResponse
)

// Backend message types: what a server (or pgtide in its place) sends.
const (
	BeParseComplete            byte = '1'
	BeBindComplete             byte = '2'
	BeCloseComplete            byte = '3'
	BeNotification             byte = 'A'
	BeCommandComplete          byte = 'C'
	BeDataRow                  byte = 'D'
	BeErrorResponse            byte = 'E'
	BeCopyInResponse           byte = 'G'
	BeCopyOutResponse          byte = 'H'
	BeEmptyQueryResponse       byte = 'I'
	BeBackendKeyData           byte = 'K'
	BeNoticeResponse           byte = 'N'
	BeAuthentication           byte = 'R'
	BeParameterStatus          byte = 'S'
	BeRowDescription           byte = 'T'
	BeFunctionCallResponse     byte = 'V'
	BeCopyBothResponse         byte = 'W'
	BeReadyForQuery            byte = 'Z'
	BeCopyData                 byte = 'd'
	BeCopyDone                 byte = 'c'
	BeNoData                   byte = 'n'
	BePortalSuspended          byte = 's'
	BeParameterDescription     byte = 't'
	BeNegotiateProtocolVersion byte = 'v'
)

// Transaction status in ReadyForQuery.
const (
	TxIdle   byte = 'I'
	TxInTx   byte = 'T'
	TxFailed byte = 'E'
)

// What a Describe or Close names (the byte before the name).
const (
	ObjStatement byte = 'S'
	ObjPortal    byte = 'P'
)
