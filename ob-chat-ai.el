;;; ob-chat-ai.el --- Chat-completion models in Org Babel blocks  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; Author: The ob-chat-ai authors
;; URL: https://github.com/ob-chat-ai/ob-chat-ai
;; Version: 0.1.0
;; Package-Requires: ((emacs "28.1"))
;; Keywords: outlines, tools, comm

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; Org Babel support for talking to chat-completion models (OpenAI and
;; any OpenAI-compatible server) from `chat-ai' source blocks:
;;
;;   #+begin_src chat-ai :model gpt-4o-mini :system "You are a helpful assistant."
;;   Server-Sent Eventについて教えて
;;   #+end_src
;;
;; C-c C-c sends the body as the user message and puts the reply under
;; #+RESULTS:.  Header arguments map to the API's request fields; the
;; request is built here as one JSON object and handed on standard input
;; to the Python helper (see ob-chat-ai-process.el), which talks HTTP.
;;
;; To enable it:
;;
;;   (org-babel-do-load-languages 'org-babel-load-languages
;;                                '((chat-ai . t)))

;;; Code:

;;;; Requirements

(require 'ob)
(require 'org-src)
(require 'auth-source)
(require 'json)
(require 'url-parse)
(require 'org-element)
(require 'ob-chat-ai-process)
(require 'ob-chat-ai-messages)
(require 'ob-chat-ai-convert)
(require 'ob-chat-ai-reply)
(require 'ob-chat-ai-async)

;;;; Customization

(defcustom ob-chat-ai-base-url "https://api.openai.com/v1"
  "The API base URL used when neither :base-url nor the provider sets one.
Requests go to this URL followed by /chat/completions."
  :type 'string
  :group 'ob-chat-ai)

(defcustom ob-chat-ai-providers
  '(("openai" :base-url-env "OPENAI_BASE_URL")
    ("azure" :api "azure" :base-url-env "AZURE_OPENAI_ENDPOINT"
     :key-env "AZURE_OPENAI_API_KEY")
    ("local" :api "local" :base-url "http://127.0.0.1:8765/v1"
     :base-url-env "CHAT_AI_LOCAL_URL" :model "smollm2"))
  "Where each provider's requests go, by name, as chosen with :provider.
Each entry is (NAME . PROPERTIES): :base-url the API base URL,
:base-url-env an environment variable that overrides it when set,
:key-env the environment variable holding the key (default
OPENAI_API_KEY), :model the model of blocks that name none, and :api
the helper's profile to follow: \"azure\" for Azure OpenAI, which
takes the key in an api-key header and the deployment (the :model)
and :api-version in the URL, or \"local\".
\"local\" is the small model that `chat-ai-local start' serves on
this machine."
  :type '(alist :key-type (string :tag "Name")
                :value-type (plist :key-type symbol :value-type string))
  :group 'ob-chat-ai)

(defcustom ob-chat-ai-provider "openai"
  "The provider of blocks that have no :provider header arg.
One of the names in `ob-chat-ai-providers'."
  :type 'string
  :group 'ob-chat-ai)

(defcustom ob-chat-ai-model "gpt-4o-mini"
  "The model of blocks that name none, when their provider names none either."
  :type 'string
  :group 'ob-chat-ai)

;;;; Header args

(defvar org-babel-default-header-args:chat-ai
  '((:stream . "yes")
    (:colnames . "no")
    (:hlines . "yes"))
  "Default header arguments for chat-ai source blocks.")

(defconst ob-chat-ai--request-fields
  '((:model model string)
    (:temperature temperature number)
    (:top-p top_p number)
    (:n n number)
    (:stream stream boolean)
    (:stop stop strings)
    (:max-tokens max_tokens number)
    (:max-completion-tokens max_completion_tokens number)
    (:presence-penalty presence_penalty number)
    (:frequency-penalty frequency_penalty number)
    (:logit-bias logit_bias json)
    (:user user string)
    (:seed seed number)
    (:response-format response_format json-or-string)
    (:reasoning-effort reasoning_effort string)
    (:store store boolean)
    (:metadata metadata json))
  "Header args that are request fields: (HEADER-ARG FIELD KIND).
KIND says how the header value becomes a JSON value: `string',
`number', `boolean', `strings' (one string or a list), `json' (a
JSON object) or `json-or-string'.")

(defconst ob-chat-ai--other-header-args
  `((:system . :any)
    (:role-system . (system developer))
    (:params . :any)
    (:provider . :any)
    (:base-url . :any)
    (:api-version . :any)
    (:headers . :any)
    (:api-key . :any)
    (:timeout . :any)
    (:max-retries . :any)
    (:dry-run . ,(mapcar #'car ob-chat-ai--boolean-words))
    (:format . (markdown org))
    (:usage . ,(mapcar #'car ob-chat-ai--boolean-words))
    (:async . ,(mapcar #'car ob-chat-ai--boolean-words)))
  "Header args that shape the request without being a field of their own.
Each is (HEADER-ARG . VALUES): VALUES is `:any' or the symbols it takes.")

(defun ob-chat-ai--allowed-values (header-arg)
  "Return the symbols that HEADER-ARG takes, or nil when it takes any value.
The helper checks the values of request fields other than booleans."
  (let ((other (assq header-arg ob-chat-ai--other-header-args))
        (field (assq header-arg ob-chat-ai--request-fields)))
    (cond
     (other (and (listp (cdr other)) (cdr other)))
     ((eq (nth 2 field) 'boolean) (mapcar #'car ob-chat-ai--boolean-words)))))

(defvar org-babel-header-args:chat-ai
  (mapcar (lambda (header-arg)
            (let ((values (ob-chat-ai--allowed-values header-arg)))
              (cons (intern (substring (symbol-name header-arg) 1))
                    (if values (list values) :any))))
          (append (mapcar #'car ob-chat-ai--request-fields)
                  (mapcar #'car ob-chat-ai--other-header-args)))
  "Header arguments specific to chat-ai source blocks and the values they take.
As in `org-babel-common-header-args-w-values', values are symbols, in
one group; `org-babel-insert-header-arg', completion and `org-lint'
read them.")

(defconst ob-chat-ai--babel-internal-params
  '(:result-params :result-type :colname-names :rowname-names)
  "Params that Babel itself adds to every block's header args.")

;;;; Functions

;;;###autoload
(defun org-babel-execute:chat-ai (body params)
  "Execute a chat-ai BODY according to PARAMS and return the model's reply.
When the block runs asynchronously, return a placeholder at once;
the reply replaces it when it has come."
  (if ob-chat-ai--finished-reply
      (prog1 ob-chat-ai--finished-reply
        (setq ob-chat-ai--finished-reply nil))
    (ob-chat-ai--check-header-args params)
    (if (ob-chat-ai--yes-p params :dry-run)
        (org-babel-expand-body:chat-ai body params)
      (let ((async (ob-chat-ai--async-p params)))
        (or (and async (ob-chat-ai--wait-for-session params))
            (let ((envelope (ob-chat-ai--envelope body params)))
              (if async
                  (ob-chat-ai--start-job envelope body params)
                (ob-chat-ai--run-sync envelope params))))))))

(defvar ob-chat-ai--preview nil
  "Non-nil while a request is made to be shown, not sent.")

(defun org-babel-expand-body:chat-ai (body params)
  "Return the request that BODY and PARAMS would send, as JSON, its key masked.
Nothing is sent.  This is what \\[org-babel-expand-src-block] shows.
Earlier blocks of the :session that have no answer yet contribute
their turns alone."
  (let* ((envelope (let ((ob-chat-ai--preview t))
                     (ob-chat-ai--envelope body params t)))
         (final (ob-chat-ai-process-wait
                 (ob-chat-ai-process-send (cons '(dry_run . t) envelope)))))
    (pcase (alist-get 'type final)
      ("preview" (alist-get 'text final))
      (_ (ob-chat-ai--user-error "%s" (ob-chat-ai--invalid-message final))))))

(defun ob-chat-ai--run-sync (envelope params)
  "Send ENVELOPE, wait for the whole reply and return its text, as PARAMS ask."
  (let* ((pieces nil)
         (request (ob-chat-ai-process-send
                   envelope
                   :on-delta (lambda (event) (push event pieces))
                   :on-retry #'ob-chat-ai--report-retry)))
    (unless noninteractive
      (message "%s" (ob-chat-ai-reply-placeholder (ob-chat-ai--model envelope))))
    (let ((final (ob-chat-ai-process-wait request)))
      (when (equal (alist-get 'kind final) "invalid")
        (ob-chat-ai--user-error "%s" (ob-chat-ai--invalid-message final)))
      (ob-chat-ai--reply-text (ob-chat-ai--choice-texts pieces) final params
                              (ob-chat-ai--heading-level)))))

(defun ob-chat-ai--model (envelope)
  "Return the model named in ENVELOPE."
  (alist-get 'model (alist-get 'body envelope)))

(defun ob-chat-ai--check-header-args (params)
  "Signal a `user-error' for the first header arg in PARAMS that is wrong.
That is a header arg nobody knows, or a value that its header arg
does not take.  This runs before anything is sent."
  (let ((known (append (mapcar #'car ob-chat-ai--request-fields)
                       (mapcar #'car ob-chat-ai--other-header-args)
                       ob-chat-ai--babel-internal-params
                       (mapcar (lambda (spec) (intern (format ":%s" (car spec))))
                               org-babel-common-header-args-w-values))))
    (dolist (param params)
      (let ((name (car param)))
        (unless (memq name known)
          (let ((guess (seq-find (lambda (candidate)
                                   (<= (string-distance (symbol-name candidate)
                                                        (symbol-name name))
                                       2))
                                 known)))
            (ob-chat-ai--user-error "Unknown header argument %s%s" name
                        (if guess (format " (did you mean %s?)" guess) ""))))
        (let ((values (ob-chat-ai--allowed-values name))
              (value (ob-chat-ai--param params name)))
          (when (and values value
                     (not (assoc-string (format "%s" value) (mapcar #'list values))))
            (ob-chat-ai--user-error "%s must be %s, not %s" name
                        (ob-chat-ai--one-of values) value)))))))

(defun ob-chat-ai--one-of (values)
  "Return VALUES, symbols, as words for a message: \"a, b or c\"."
  (let ((words (mapcar #'symbol-name values)))
    (if (cdr words)
        (concat (string-join (butlast words) ", ") " or " (car (last words)))
      (car words))))

(defun ob-chat-ai--envelope (body params &optional preview)
  "Return the request for BODY and PARAMS, as an alist ready for the helper.
For a PREVIEW, a missing API key is no error."
  (when (string-empty-p (string-trim body))
    (ob-chat-ai--user-error "The block is empty; write the prompt between \
#+begin_src and #+end_src"))
  (let* ((provider (ob-chat-ai--provider params))
         (api (plist-get provider :api))
         (base-url (or (ob-chat-ai--param params :base-url)
                       (ob-chat-ai--nonempty
                        (getenv (or (plist-get provider :base-url-env) "")))
                       (plist-get provider :base-url)
                       (if api
                           (ob-chat-ai--user-error "Provider %s needs an endpoint: \
:base-url or $%s" api (plist-get provider :base-url-env))
                         ob-chat-ai-base-url)))
         (headers (ob-chat-ai--headers (ob-chat-ai--param params :headers)))
         (key (ob-chat-ai--api-key params base-url
                                   (or (plist-get provider :key-env) "OPENAI_API_KEY")
                                   (or headers preview)))
         (api-version (ob-chat-ai--param params :api-version))
         (timeout (ob-chat-ai--param params :timeout))
         (retries (ob-chat-ai--param params :max-retries)))
    (when (and timeout (not (numberp timeout)))
      (ob-chat-ai--user-error ":timeout must be a number of seconds, not %S" timeout))
    `((base_url . ,base-url)
      ,@(and api `((provider . ,api)))
      ,@(and key `((api_key . ,key)))
      ,@(and headers `((headers . ,headers)))
      ,@(and api-version `((api_version . ,(format "%s" api-version))))
      ,@(and timeout `((timeout . ,timeout)))
      ,@(and retries `((max_retries . ,retries)))
      (body . ,(ob-chat-ai--body
                body
                (if (ob-chat-ai--param params :model)
                    params
                  (cons (cons :model (or (plist-get provider :model) ob-chat-ai-model))
                        params)))))))

(defun ob-chat-ai--headers (value)
  "Return the HTTP headers that :headers VALUE gives, as an alist, or nil.
VALUE is one \"Name: value\" string, a list or vector of them, or a
JSON object."
  (cond
   ((null value) nil)
   ((and (stringp value) (string-prefix-p "{" (string-trim-left value)))
    (let ((object (ob-chat-ai--parse-json :headers value)))
      (unless (and (consp object) (seq-every-p (lambda (h) (stringp (cdr h))) object))
        (ob-chat-ai--user-error ":headers is not a JSON object of strings: %s" value))
      object))
   (t
    (mapcar (lambda (header)
              (let ((text (format "%s" header)))
                (unless (string-match "\\`\\([^:\n]+\\):[ \t]*\\([^\n]*\\)\\'" text)
                  (ob-chat-ai--user-error ":headers takes \"Name: value\", not %S" text))
                (cons (intern (string-trim (match-string 1 text)))
                      (string-trim (match-string 2 text)))))
            (if (stringp value) (list value) (append value nil))))))

(defun ob-chat-ai--provider (params)
  "Return the properties of the provider that PARAMS choose."
  (let ((name (format "%s" (or (ob-chat-ai--param params :provider)
                               ob-chat-ai-provider))))
    (or (cdr (assoc name ob-chat-ai-providers))
        (ob-chat-ai--user-error "Unknown :provider %s; known: %s" name
                    (mapconcat #'car ob-chat-ai-providers ", ")))))

(defun ob-chat-ai--body (body params)
  "Return the chat-completions request body for BODY and PARAMS."
  (let ((fields nil))
    (dolist (spec ob-chat-ai--request-fields)
      (let ((value (ob-chat-ai--param params (car spec))))
        (when value
          (push (cons (nth 1 spec)
                      (ob-chat-ai--json-value (car spec) (nth 2 spec) value))
                fields))))
    (push (cons 'messages (ob-chat-ai--messages body params)) fields)
    (when (and (ob-chat-ai--yes-p params :usage) (eq (alist-get 'stream fields) t))
      (push '(stream_options (include_usage . t)) fields))
    (let ((listed (nreverse fields)))
      (append listed
              (seq-remove (lambda (field) (assq (car field) listed))
                          (ob-chat-ai--params-object params))))))

(defun ob-chat-ai--messages (body params)
  "Return the messages for BODY and PARAMS.
They are the system message, the conversation so far of the block's
:session, and the turns of BODY, its $variables replaced."
  (let* ((session (ob-chat-ai-messages-session params))
         (history (and session
                       (ob-chat-ai-messages-history
                        session (ob-chat-ai--block-start) #'ob-chat-ai--block-busy-p
                        ob-chat-ai--preview)))
         (system (or (cdr history) (ob-chat-ai--param params :system)))
         (role (format "%s" (or (ob-chat-ai--param params :role-system) "system")))
         (turns (append (car history) (ob-chat-ai-messages-block-turns body params))))
    (vconcat
     (and system `(((role . ,role) (content . ,(format "%s" system)))))
     (mapcar (lambda (turn) `((role . ,(car turn)) (content . ,(cdr turn))))
             turns))))

(defun ob-chat-ai--json-value (name kind value)
  "Return header arg NAME's VALUE as the JSON value of its KIND.
A value that cannot be converted is passed on as it is, for the
helper to refuse with a message naming the field."
  (pcase kind
    ('string (if (stringp value) value (format "%s" value)))
    ('number (if (and (stringp value)
                      (string-match-p
                       "\\`[-+]?\\([0-9]+\\.?[0-9]*\\|\\.[0-9]+\\)\\([eE][-+]?[0-9]+\\)?\\'"
                       value))
                 (string-to-number value)
               (ob-chat-ai--json-scalar value)))
    ('boolean (or (ob-chat-ai--boolean value) (ob-chat-ai--json-scalar value)))
    ('strings (if (or (consp value) (vectorp value))
                  (vconcat (mapcar #'ob-chat-ai--list-item value))
                (format "%s" value)))
    ('json (if (stringp value)
               (ob-chat-ai--parse-json name value)
             (ob-chat-ai--json-scalar value)))
    ('json-or-string
     (let ((text (format "%s" value)))
       (if (or (string-prefix-p "{" text)
               (and (not (member text '("text" "json" "json_object" "json_schema")))
                    (ob-chat-ai--named-block-buffer text)))
           (ob-chat-ai--json-in name text)
         text)))))

(defun ob-chat-ai--json-in (name text)
  "Return the JSON value that header arg NAME gives as TEXT.
TEXT is the JSON itself, or the name of a block whose body is."
  (ob-chat-ai--parse-json name (if (string-prefix-p "{" (string-trim-left text))
                                   text
                                 (ob-chat-ai--named-block-body text name))))

(defun ob-chat-ai--list-item (item)
  "Return ITEM of a header arg list as a string.
Org reads [\"a\", \"b\"] as Lisp, so a JSON-style comma turns
the item after it into (\, ITEM)."
  (format "%s" (if (eq (car-safe item) '\,) (cadr item) item)))

(defun ob-chat-ai--json-scalar (value)
  "Return VALUE if JSON can hold it as it is, else its printed form."
  (if (or (numberp value) (stringp value)) value (format "%s" value)))

(defun ob-chat-ai--parse-json (name text)
  "Return the JSON value in TEXT, the value of header arg NAME."
  (condition-case err
      (json-parse-string text :object-type 'alist)
    (json-error
     (ob-chat-ai--user-error "%s is not valid JSON (%s): %s"
                 name (error-message-string err) text))))

(defun ob-chat-ai--params-object (params)
  "Return the extra request fields of the :params header arg in PARAMS.
Its value is a JSON object, or the name of a block whose body is one."
  (let ((value (ob-chat-ai--param params :params)))
    (when value
      (let* ((text (format "%s" value))
             (object (ob-chat-ai--json-in :params text)))
        (unless (and (listp object) (consp (car-safe object)))
          (ob-chat-ai--user-error ":params must be a JSON object, not %s" text))
        object))))

(defun ob-chat-ai--named-block-buffer (name)
  "Return the buffer with the block named NAME in it, or nil.
That is the current buffer or, during export, the buffer being
exported, since export removes blocks marked :exports none from the
copy it evaluates."
  (seq-find (lambda (buffer)
              (and (buffer-live-p buffer)
                   (with-current-buffer buffer
                     (org-babel-find-named-block name))))
            (list (current-buffer)
                  (bound-and-true-p org-babel-exp-reference-buffer))))

(defun ob-chat-ai--named-block-body (name header-arg)
  "Return the body of the block named NAME, referred to by HEADER-ARG."
  (let ((buffer (ob-chat-ai--named-block-buffer name)))
    (unless buffer
      (ob-chat-ai--user-error "%s refers to %s, but no block has #+name: %s"
                  header-arg name name))
    (with-current-buffer buffer
      (save-excursion
        (goto-char (org-babel-find-named-block name))
        (string-trim (nth 1 (org-babel-get-src-block-info 'no-eval)))))))

(defun ob-chat-ai--api-key (params base-url variable optional)
  "Return the API key for BASE-URL: from PARAMS, auth-source or the environment.
A <<NAME>> :api-key names a block whose body is the key; the
environment VARIABLE is the last place looked.  Return nil when no
key is found for a server on loopback, or when the key is OPTIONAL
\(extra headers may authenticate the request, or nothing is to be
sent); signal a `user-error' saying where it looked otherwise."
  (let* ((host (url-host (url-generic-parse-url base-url)))
         (given (ob-chat-ai--param params :api-key))
         (key (cond
               ((and (stringp given)
                     (string-match "\\`<<\\([^<>()]+\\)\\(()\\)?>>\\'" given))
                (let ((name (match-string 1 given)))
                  (or (ob-chat-ai--nonempty
                       (ob-chat-ai--named-block-body name :api-key))
                      (ob-chat-ai--user-error ":api-key refers to block %s, \
which is empty" name))))
               (given (format "%s" given))
               ((ob-chat-ai--auth-source-key host))
               ((ob-chat-ai--nonempty (getenv variable))))))
    (when (and key (string-match-p "[\n\r]" key))
      (ob-chat-ai--user-error "The API key has a line break in it"))
    (if (or key optional (ob-chat-ai--loopback-p host))
        key
      (ob-chat-ai--user-error "No API key for %s; looked in :api-key, auth-source \
(machine %s in %s) and $%s"
                  host host
                  (mapconcat #'identity (seq-filter #'stringp auth-sources) ", ")
                  variable))))

(defun ob-chat-ai--auth-source-key (host)
  "Return the secret that auth-source has for HOST, or nil."
  (when host
    (let* ((found (car (auth-source-search :host host :max 1 :require '(:secret))))
           (secret (plist-get found :secret)))
      (ob-chat-ai--nonempty (if (functionp secret) (funcall secret) secret)))))

(defun ob-chat-ai--nonempty (text)
  "Return TEXT trimmed, or nil when it is nil or blank."
  (and text (not (string-empty-p (string-trim text))) (string-trim text)))

(defun ob-chat-ai--loopback-p (host)
  "Return non-nil when HOST is this machine."
  (and host
       (or (member host '("localhost" "::1" "[::1]"))
           (string-prefix-p "127." host))))

;;;; Sessions

(defvar ob-chat-ai--waiting nil
  "Markers at the blocks that wait for an earlier block of their session.
The newest is first.")

(defun ob-chat-ai--block-start ()
  "Return the start of the block at point, or else of the block being run.
Babel runs a block with point on it, except for a #+CALL: line; where
it says the block is may be out of date when a reply came meanwhile."
  (let ((element (org-element-at-point)))
    (if (eq (org-element-type element) 'src-block)
        (org-element-property :post-affiliated element)
      (or org-babel-current-src-block-location (point)))))

(defun ob-chat-ai--block-busy-p (position)
  "Return non-nil when the block at POSITION waits for its reply or its turn."
  (or (ob-chat-ai--job-block-p position)
      (seq-some (lambda (marker)
                  (and (eq (marker-buffer marker) (current-buffer))
                       (= marker position)))
                ob-chat-ai--waiting)))

(defun ob-chat-ai--wait-for-session (params)
  "Return a placeholder when the block with PARAMS must wait for its session.
It must while an earlier block of its :session waits for its reply;
it is then run again when that reply is in."
  (let* ((session (ob-chat-ai-messages-session params))
         (here (ob-chat-ai--block-start)))
    (when (and session
               (seq-some #'ob-chat-ai--block-busy-p
                         (ob-chat-ai-messages-session-blocks session here)))
      (setq ob-chat-ai--waiting
            (cons (copy-marker here t)
                  (seq-remove (lambda (marker)
                                (and (eq (marker-buffer marker) (current-buffer))
                                     (= marker here)))
                              ob-chat-ai--waiting)))
      (ob-chat-ai--session-placeholder session))))

(defun ob-chat-ai--session-placeholder (session)
  "Return the placeholder of a block that waits for the earlier ones of SESSION."
  (ob-chat-ai-reply-placeholder (format "the earlier blocks of session %s" session)))

(defun ob-chat-ai--start-waiting ()
  "Run each waiting block whose session has no earlier block left to wait for.
A block that cannot run gets an error line saying why."
  (dolist (marker (reverse ob-chat-ai--waiting))
    (let ((buffer (marker-buffer marker)))
      (if (not (buffer-live-p buffer))
          (setq ob-chat-ai--waiting (delq marker ob-chat-ai--waiting))
        (with-current-buffer buffer
          (save-excursion
            (goto-char marker)
            (let* ((element (org-element-at-point))
                   (session (and (eq (org-element-type element) 'src-block)
                                 (= (org-element-property :post-affiliated element)
                                    marker)
                                 (ob-chat-ai-messages-session
                                  (nth 2 (org-babel-get-src-block-info 'no-eval))))))
              (cond
               ((not session)
                (setq ob-chat-ai--waiting (delq marker ob-chat-ai--waiting))
                (set-marker marker nil))
               ((not (seq-some #'ob-chat-ai--block-busy-p
                               (ob-chat-ai-messages-session-blocks session marker)))
                (setq ob-chat-ai--waiting (delq marker ob-chat-ai--waiting))
                (set-marker marker nil)
                (ob-chat-ai--run-waiting session))))))))))

(defun ob-chat-ai--run-waiting (session)
  "Run the block at point, which waited for SESSION; show why if it cannot.
Its placeholder goes first: with :cache yes the whole result, lest
Babel take it for the answer, else its line alone, for :results
append."
  (let ((org-confirm-babel-evaluate nil)
        (where (org-babel-where-is-src-block-result)))
    (when where
      (if (equal (cdr (assq :cache (nth 2 (org-babel-get-src-block-info 'no-eval))))
                 "yes")
          (org-babel-remove-result)
        (save-excursion
          (goto-char where)
          (forward-line)
          (when (search-forward (ob-chat-ai--session-placeholder session)
                                (max (org-babel-result-end) (line-end-position)) t)
            (delete-region (line-beginning-position)
                           (min (point-max) (1+ (line-end-position))))))))
    (condition-case err
        (org-babel-execute-src-block)
      (error
       (let ((line (ob-chat-ai-reply-error-line
                    (string-remove-prefix "chat-ai: " (error-message-string err)))))
         (message "%s" line)
         (let ((ob-chat-ai--finished-reply line))
           (org-babel-execute-src-block nil nil '((:cache . "no")))))))))

(add-hook 'ob-chat-ai--after-job-hook #'ob-chat-ai--start-waiting)

(add-to-list 'org-src-lang-modes '("chat-ai" . text))

(provide 'ob-chat-ai)

;;; ob-chat-ai.el ends here
