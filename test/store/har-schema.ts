// HAR 1.2 as a JSON Schema (draft-07), written from the spec
// (http://www.softwareishard.com/blog/har-12-spec/): required members, types and ranges of log,
// creator, entries, request, response, content, cache and timings. Custom fields (leading "_")
// are allowed, as the spec allows.
const nameValue = {
  type: 'object',
  required: ['name', 'value'],
  properties: { name: { type: 'string' }, value: { type: 'string' }, comment: { type: 'string' } },
};
const cookie = {
  type: 'object',
  required: ['name', 'value'],
  properties: {
    name: { type: 'string' }, value: { type: 'string' }, path: { type: 'string' }, domain: { type: 'string' },
    expires: { type: ['string', 'null'], format: 'date-time' }, httpOnly: { type: 'boolean' }, secure: { type: 'boolean' }, comment: { type: 'string' },
  },
};
const beforeAfter = {
  type: 'object',
  required: ['lastAccess', 'eTag', 'hitCount'],
  properties: { expires: { type: 'string' }, lastAccess: { type: 'string' }, eTag: { type: 'string' }, hitCount: { type: 'integer' }, comment: { type: 'string' } },
};
const optionalTiming = { type: 'number', minimum: -1 };

export const HAR_SCHEMA = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  type: 'object',
  required: ['log'],
  properties: {
    log: {
      type: 'object',
      required: ['version', 'creator', 'entries'],
      properties: {
        version: { type: 'string', const: '1.2' },
        creator: { type: 'object', required: ['name', 'version'], properties: { name: { type: 'string' }, version: { type: 'string' }, comment: { type: 'string' } } },
        browser: { type: 'object', required: ['name', 'version'], properties: { name: { type: 'string' }, version: { type: 'string' } } },
        pages: {
          type: 'array',
          items: {
            type: 'object',
            required: ['startedDateTime', 'id', 'title', 'pageTimings'],
            properties: { startedDateTime: { type: 'string', format: 'date-time' }, id: { type: 'string' }, title: { type: 'string' }, pageTimings: { type: 'object' } },
          },
        },
        entries: {
          type: 'array',
          items: {
            type: 'object',
            required: ['startedDateTime', 'time', 'request', 'response', 'cache', 'timings'],
            properties: {
              pageref: { type: 'string' },
              startedDateTime: { type: 'string', format: 'date-time' },
              time: { type: 'number', minimum: 0 },
              request: {
                type: 'object',
                required: ['method', 'url', 'httpVersion', 'cookies', 'headers', 'queryString', 'headersSize', 'bodySize'],
                properties: {
                  method: { type: 'string' },
                  url: { type: 'string', format: 'uri' },
                  httpVersion: { type: 'string' },
                  cookies: { type: 'array', items: cookie },
                  headers: { type: 'array', items: nameValue },
                  queryString: { type: 'array', items: nameValue },
                  postData: {
                    type: 'object',
                    required: ['mimeType'],
                    properties: {
                      mimeType: { type: 'string' },
                      text: { type: 'string' },
                      params: { type: 'array', items: { type: 'object', required: ['name'], properties: { name: { type: 'string' }, value: { type: 'string' }, fileName: { type: 'string' }, contentType: { type: 'string' } } } },
                      comment: { type: 'string' },
                    },
                  },
                  headersSize: { type: 'integer' },
                  bodySize: { type: 'integer' },
                  comment: { type: 'string' },
                },
              },
              response: {
                type: 'object',
                required: ['status', 'statusText', 'httpVersion', 'cookies', 'headers', 'content', 'redirectURL', 'headersSize', 'bodySize'],
                properties: {
                  status: { type: 'integer' },
                  statusText: { type: 'string' },
                  httpVersion: { type: 'string' },
                  cookies: { type: 'array', items: cookie },
                  headers: { type: 'array', items: nameValue },
                  content: {
                    type: 'object',
                    required: ['size', 'mimeType'],
                    properties: { size: { type: 'integer' }, compression: { type: 'integer' }, mimeType: { type: 'string' }, text: { type: 'string' }, encoding: { type: 'string' }, comment: { type: 'string' } },
                  },
                  redirectURL: { type: 'string' },
                  headersSize: { type: 'integer' },
                  bodySize: { type: 'integer' },
                  comment: { type: 'string' },
                },
              },
              cache: { type: 'object', properties: { beforeRequest: { oneOf: [beforeAfter, { type: 'null' }] }, afterRequest: { oneOf: [beforeAfter, { type: 'null' }] }, comment: { type: 'string' } } },
              timings: {
                type: 'object',
                required: ['send', 'wait', 'receive'],
                properties: {
                  blocked: optionalTiming, dns: optionalTiming, connect: optionalTiming, ssl: optionalTiming,
                  send: { type: 'number', minimum: 0 }, wait: { type: 'number', minimum: 0 }, receive: { type: 'number', minimum: 0 }, comment: { type: 'string' },
                },
              },
              serverIPAddress: { type: 'string' },
              connection: { type: 'string' },
              comment: { type: 'string' },
            },
          },
        },
        comment: { type: 'string' },
      },
    },
  },
} as const;

/** Chrome DevTools' WebSocket extension of an entry. */
export const WS_ENTRY_SCHEMA = {
  type: 'object',
  required: ['_resourceType', '_webSocketMessages'],
  properties: {
    _resourceType: { const: 'websocket' },
    _webSocketMessages: {
      type: 'array',
      items: {
        type: 'object',
        required: ['type', 'time', 'opcode', 'data'],
        additionalProperties: false,
        properties: { type: { enum: ['send', 'receive'] }, time: { type: 'number' }, opcode: { enum: [1, 2, 8, 9, 10] }, data: { type: 'string' } },
      },
    },
  },
} as const;
