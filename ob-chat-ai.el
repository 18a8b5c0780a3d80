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
;; Installing the package is enough: Babel's functions for chat-ai
;; are autoloaded, so no `org-babel-load-languages' entry is needed.
;; `ob-chat-ai-install-helper' sets up the helper and
;; `ob-chat-ai-doctor' says what is wrong (ob-chat-ai-setup.el).

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
(require 'ob-chat-ai-files)
(require 'ob-chat-ai-images)
(require 'ob-chat-ai-tools)
(require 'ob-chat-ai-requests)

;;;; Customization

(defcustom ob-chat-ai-provider "openai"
  "The provider of blocks that have no :provider header arg.
The helper knows the providers: openai, azure, local and those of
the user's providers.json; \\[ob-chat-ai-providers] lists them."
  :type 'string
  :group 'ob-chat-ai)

(defcustom ob-chat-ai-model nil
  "The model of blocks that name none, or nil to leave it to the helper.
The helper takes $CHAT_AI_MODEL, else the provider's model, else
gpt-4o-mini."
  :type '(choice (const :tag "The helper's choice" nil) string)
  :group 'ob-chat-ai)

(defcustom ob-chat-ai-max-concurrent nil
  "How many requests may be in flight to one server at once, or nil.
The helper queues the others and sends them in turn; nil leaves the
number to the provider's max_concurrent in providers.json, else 6.
The :max-concurrent header arg decides for one block."
  :type '(choice (const :tag "The provider's, else 6" nil) natnum)
  :group 'ob-chat-ai)

;;;; Header args

;;;###autoload
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
    (:metadata metadata json)
    (:suffix suffix string)
    (:echo echo boolean)
    (:best-of best_of number)
    (:logprobs logprobs number)
    (:size size string)
    (:quality quality string)
    (:style style string)
    (:background background string)
    (:output-format output_format string))
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
    (:max-concurrent . :any)
    (:dry-run . ,(mapcar #'car ob-chat-ai--boolean-words))
    (:format . (markdown org))
    (:usage . ,(mapcar #'car ob-chat-ai--boolean-words))
    (:reasoning . ,(mapcar #'car ob-chat-ai--boolean-words))
    (:async . ,(mapcar #'car ob-chat-ai--boolean-words))
    (:image . :any)
    (:detail . (auto low high))
    (:endpoint . (chat completions images))
    (:mask . :any)
    (:tools . :any)
    (:max-tool-rounds . :any))
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
the reply replaces it when it has come.  A request still running
for the block is cancelled first."
  (if ob-chat-ai--finished-reply
      (prog1 ob-chat-ai--finished-reply
        (setq ob-chat-ai--finished-reply nil))
    (let ((ob-chat-ai--executing t))
      (ob-chat-ai--execute body params))))

(defvar ob-chat-ai--previewing nil
  "Non-nil while a request is made to be shown, not sent.")

(defun ob-chat-ai--execute (body params)
  "Run the chat-ai block with BODY and PARAMS: dry run, in the background, or now."
  (ob-chat-ai--check-header-args params)
  (unless (ob-chat-ai--yes-p params :dry-run)
    (ob-chat-ai-reply-make-room-for-reasoning params))
  (if (ob-chat-ai--yes-p params :dry-run)
      (ob-chat-ai--dry-run body params)
    (let ((async (ob-chat-ai--async-p params)))
      (or (and async (ob-chat-ai--wait-for-session params))
          (let ((envelope (ob-chat-ai--envelope body params)))
            (if async
                (progn
                  (ob-chat-ai--check-request envelope)
                  (ob-chat-ai--start-job envelope body params
                                         (ob-chat-ai--model envelope)
                                         (ob-chat-ai--drop-block-job t)))
              (unless (seq-intersection '("silent" "none")
                                        (cdr (assq :result-params params)))
                (ob-chat-ai--drop-block-job))
              (ob-chat-ai--run-sync envelope params)))))))

;;;###autoload
(defun org-babel-expand-body:chat-ai (body params)
  "Return the prompt that BODY and PARAMS send: BODY, its $variables filled in.
This is what \\[org-babel-expand-src-block] shows, what tangling
writes and what :cache hashes, so it is computed here, at once,
without the helper.  :dry-run yes shows the whole request instead.
With :tools, the tools array follows, as JSON, after a [tools] line."
  (let ((prompt (ob-chat-ai-messages-substitute body (org-babel--get-vars params)))
        (tools (ob-chat-ai-tools-array params)))
    (if tools
        (concat prompt "\n\n[tools]\n" (json-serialize tools))
      prompt)))

(defun ob-chat-ai--dry-run (body params)
  "Return the request that BODY and PARAMS would send, as JSON, keys masked.
The helper builds it as it would send it; nothing is sent."
  (let ((final (ob-chat-ai-process-wait
                (ob-chat-ai-process-send
                 (cons '(dry_run . t)
                       (let ((ob-chat-ai--previewing t))
                         (ob-chat-ai--envelope body params)))))))
    (pcase (alist-get 'type final)
      ("preview" (alist-get 'text final))
      (_ (ob-chat-ai--user-error "%s" (ob-chat-ai--invalid-message final))))))

(defun ob-chat-ai--send-sync (envelope)
  "Send ENVELOPE and wait for its final event; return what came.
That is a plist of :deltas and :thoughts (the last one first),
:calls (the tool calls, in order) and :final."
  (let* ((pieces nil)
         (thoughts nil)
         (calls nil)
         (thought 0)
         (request (ob-chat-ai-process-send
                   envelope
                   :on-delta (lambda (event) (push event pieces))
                   :on-reasoning
                   (lambda (event)
                     (push event thoughts)
                     (cl-incf thought (length (alist-get 'text event)))
                     (unless (or noninteractive pieces)
                       (message "%s" (ob-chat-ai-reply-thinking thought))))
                   :on-tool-call (lambda (event) (push event calls))
                   :on-retry #'ob-chat-ai--report-retry)))
    (unless noninteractive
      (message "%s" (ob-chat-ai-reply-placeholder (ob-chat-ai--model envelope))))
    (let ((final (ob-chat-ai-process-wait request)))
      (list :deltas pieces :thoughts thoughts :calls (nreverse calls) :final final))))

(defun ob-chat-ai--run-sync (envelope params)
  "Send ENVELOPE, wait for the whole reply and return its text, as PARAMS ask.
A request the helper finds invalid is a `user-error', and the buffer
is left as it was.  A failed request's line stays in the echo area
after Babel's own message; with :cache yes, only a whole reply keeps
the hash Babel gives the result.  A reply with a very long line goes
in an example block.  While the model calls the block's :tools,
they are run and the conversation goes on (`ob-chat-ai-tools-exchange')."
  (let* ((tools nil)
         (turn (ob-chat-ai-tools-exchange
                envelope params #'ob-chat-ai--send-sync
                (lambda (records) (setq tools records))))
         (pieces (plist-get turn :deltas))
         (thoughts (plist-get turn :thoughts)))
    (let ((final (plist-get turn :final)))
      (when (equal (alist-get 'kind final) "invalid")
        (ob-chat-ai--user-error "%s" (ob-chat-ai--invalid-message final)))
      (let* ((texts (ob-chat-ai--choice-texts pieces params))
             (echo (ob-chat-ai-reply-echo final))
             (uncached (and (ob-chat-ai--yes-p params :cache)
                            (not (ob-chat-ai-reply-complete-p texts final)))))
        (when echo
          (message "%s" echo))
        (when (and (or echo uncached) (ob-chat-ai--at-src-block-p))
          (let ((block (copy-marker org-babel-current-src-block-location)))
            (ob-chat-ai--after-babel
             (lambda ()
               (when uncached
                 (save-excursion
                   (goto-char block)
                   (ob-chat-ai--set-result-hash nil)))
               (set-marker block nil)
               (when echo
                 (message "%s" echo))))))
        (let ((text (ob-chat-ai--reply-text texts final params
                                            (ob-chat-ai--heading-level)
                                            (ob-chat-ai--choice-thinking thoughts)
                                            tools)))
          (when (ob-chat-ai-reply-long-line-p text)
            (ob-chat-ai--example-block-once))
          (when (and (or tools (and thoughts (ob-chat-ai-reply-shows-reasoning-p params)))
                     (ob-chat-ai--at-src-block-p))
            (let ((block (copy-marker org-babel-current-src-block-location)))
              (ob-chat-ai--after-babel
               (lambda ()
                 (ob-chat-ai--fold-reasoning block)
                 (set-marker block nil)))))
          text)))))

(defun ob-chat-ai--example-block-once ()
  "Make Babel put the next result of this buffer in an example block.
Org's font-lock freezes Emacs on a very long fixed-width line."
  (let ((local (local-variable-p 'org-babel-min-lines-for-block-output))
        (old org-babel-min-lines-for-block-output))
    (setq-local org-babel-min-lines-for-block-output 0)
    (ob-chat-ai--after-babel
     (lambda ()
       (if local
           (setq org-babel-min-lines-for-block-output old)
         (kill-local-variable 'org-babel-min-lines-for-block-output))))))

(defun ob-chat-ai--check-request (envelope)
  "Signal a `user-error' unless the helper accepts ENVELOPE as valid; send nothing."
  (let ((final (ob-chat-ai-process-wait
                (ob-chat-ai-process-send (cons '(dry_run . t) envelope)))))
    (when (equal (alist-get 'kind final) "invalid")
      (ob-chat-ai--user-error "%s" (ob-chat-ai--invalid-message final)))))

(defun ob-chat-ai--model (envelope)
  "Return the model that ENVELOPE asks, as named in it or as the helper chooses."
  (or (alist-get 'model (alist-get 'body envelope))
      (alist-get 'model (ob-chat-ai--provider-entry (alist-get 'provider envelope)))
      "the model"))

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

(defun ob-chat-ai--envelope (body params)
  "Return the request for BODY and PARAMS, as an alist ready for the helper.
It holds what the block states; the helper decides where it goes and
which key it carries (see `ob-chat-ai--api-key')."
  (when (string-empty-p (string-trim body))
    (ob-chat-ai--user-error "The block is empty; write the prompt between \
#+begin_src and #+end_src"))
  (let* ((provider (ob-chat-ai--provider params))
         (base-url (ob-chat-ai--param params :base-url))
         (base-url (and base-url (format "%s" base-url)))
         (headers (ob-chat-ai--headers (ob-chat-ai--param params :headers)))
         (api-version (ob-chat-ai--param params :api-version))
         (timeout (ob-chat-ai--param params :timeout))
         (retries (ob-chat-ai--param params :max-retries))
         (concurrent (or (ob-chat-ai--param params :max-concurrent)
                         ob-chat-ai-max-concurrent)))
    `((provider . ,provider)
      ,@(and base-url `((base_url . ,base-url)))
      ,@(ob-chat-ai--api-key params (or base-url (ob-chat-ai--provider-url provider)))
      ,@(and headers `((headers . ,headers)))
      ,@(and api-version `((api_version . ,(format "%s" api-version))))
      ,@(and timeout `((timeout . ,timeout)))
      ,@(and retries `((max_retries . ,retries)))
      ,@(and concurrent `((max_concurrent . ,concurrent)))
      ,@(and (ob-chat-ai--param params :endpoint)
             `((endpoint . ,(ob-chat-ai--endpoint params))))
      ,@(and (ob-chat-ai-images-p params) (ob-chat-ai-images-output body params))
      ,@(and buffer-file-name `((org_file . ,(expand-file-name buffer-file-name))))
      ,@(let ((block (ob-chat-ai--block-label)))
          (and block `((block . ,block))))
      (body . ,(ob-chat-ai--body
                body
                (if (or (ob-chat-ai--param params :model) (null ob-chat-ai-model))
                    params
                  (cons (cons :model ob-chat-ai-model) params)))))))

(defun ob-chat-ai--block-label ()
  "Return the name of the block being run, else \"line N\" of it, or nil.
The usage log keeps it with the request."
  (let* ((location org-babel-current-src-block-location)
         (start (if (markerp location)
                    (and (eq (marker-buffer location) (current-buffer)) location)
                  (and (integerp location) location))))
    (when start
      (org-with-wide-buffer
       (goto-char start)
       (or (org-element-property :name (ob-chat-ai--element-at-point))
           (format "line %d" (line-number-at-pos)))))))

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
  "Return the name of the provider that PARAMS choose."
  (format "%s" (or (ob-chat-ai--param params :provider) ob-chat-ai-provider)))

(defvar ob-chat-ai--provider-cache nil
  "What the helper last listed: a plist of :setup, :file, :time and :providers.")

;;;###autoload
(defun ob-chat-ai-providers (&optional interactive)
  "Return the providers the helper knows, each an alist with symbol keys.
Each has its name, api, base_url, model and key_variable.  The helper
is asked once for each set-up of it, and again when the providers
file changes.  INTERACTIVE, as when called with \\[execute-extended-command],
shows their names."
  (interactive "p")
  (let* ((cache ob-chat-ai--provider-cache)
         (providers
          (if (and cache
                   (equal (plist-get cache :setup) (ob-chat-ai--helper-setup))
                   (equal (plist-get cache :time)
                          (ob-chat-ai--file-time (plist-get cache :file))))
              (plist-get cache :providers)
            (ob-chat-ai--fetch-providers))))
    (when interactive
      (if providers
          (message "chat-ai providers: %s"
                   (mapconcat (lambda (entry) (alist-get 'name entry)) providers ", "))
        (message "chat-ai: the helper could not list its providers")))
    providers))

(defun ob-chat-ai--fetch-providers ()
  "Ask the helper for its providers, remember them, and return them.
Their names become the values that Babel offers for :provider.  When
the helper cannot list them, return nil: the request that follows
reports the same problem."
  (let* ((setup (ob-chat-ai--helper-setup))
         (final (ob-chat-ai-process-wait
                 ;; The helper answers at once: a helper that does not is
                 ;; given up on after a short wait, not a reply's.
                 (ob-chat-ai-process-send '((type . "providers") (timeout . 5)))))
         (providers (alist-get 'providers final)))
    (when (equal (alist-get 'type final) "providers")
      (ob-chat-ai--remember-providers setup (alist-get 'file final) providers))))

(defun ob-chat-ai--remember-providers (setup file providers)
  "Remember PROVIDERS, listed by a helper of SETUP reading FILE, and return them."
  (setq ob-chat-ai--provider-cache
        (list :setup setup
              :file file
              :time (ob-chat-ai--file-time file)
              :providers providers))
  (setf (alist-get 'provider org-babel-header-args:chat-ai)
        (list (mapcar (lambda (entry) (intern (alist-get 'name entry))) providers)))
  providers)

(defun ob-chat-ai--file-time (file)
  "Return the modification time of FILE, or nil when there is no such file."
  (and file (file-attribute-modification-time (file-attributes file))))

(defun ob-chat-ai--provider-entry (name)
  "Return the helper's description of the provider called NAME, or nil."
  (seq-find (lambda (entry) (equal (alist-get 'name entry) name))
            (ob-chat-ai-providers)))

(defun ob-chat-ai--provider-url (name)
  "Return the base URL of the provider called NAME, as the helper knows it."
  (alist-get 'base_url (ob-chat-ai--provider-entry name)))

(defun ob-chat-ai--body (body params)
  "Return the chat-completions request body for BODY and PARAMS."
  (let ((fields nil))
    (dolist (spec ob-chat-ai--request-fields)
      (let ((value (ob-chat-ai--param params (car spec))))
        (when value
          (push (cons (nth 1 spec)
                      (ob-chat-ai--json-value (car spec) (nth 2 spec) value))
                fields))))
    (setq fields (append (reverse (ob-chat-ai--input body params)) fields))
    (let ((tools (ob-chat-ai-tools-array params)))
      (when tools
        (push (cons 'tools tools) fields)))
    (when (and (ob-chat-ai--yes-p params :usage) (eq (alist-get 'stream fields) t))
      (push '(stream_options (include_usage . t)) fields))
    (let ((listed (nreverse fields)))
      (append listed
              (seq-remove (lambda (field) (assq (car field) listed))
                          (ob-chat-ai--params-object params))))))

(defun ob-chat-ai--endpoint (params)
  "Return the :endpoint of PARAMS, checked: chat, completions or images."
  (let ((endpoint (format "%s" (or (ob-chat-ai--param params :endpoint) "chat"))))
    (unless (member endpoint '("chat" "completions" "images"))
      (ob-chat-ai--user-error ":endpoint must be chat, completions or images, not %s"
                              endpoint))
    endpoint))

(defun ob-chat-ai--input (body params)
  "Return the request fields that carry BODY for the endpoint of PARAMS.
Chat takes the messages; the completions and images endpoints take
BODY, its $variables filled in, as the prompt."
  (let ((endpoint (ob-chat-ai--endpoint params)))
    (if (equal endpoint "chat")
        (list (cons 'messages (ob-chat-ai--messages body params)))
      (dolist (name '(:system :session :tools))
        (when (and (ob-chat-ai--param params name)
                   (not (equal (ob-chat-ai--param params name) "none")))
          (ob-chat-ai--user-error "%s is for the chat endpoint, not %s"
                                  name endpoint)))
      (let ((prompt (ob-chat-ai-messages-substitute
                     body (org-babel--get-vars params))))
        (if (equal endpoint "images")
            (ob-chat-ai-images-fields prompt params)
          (list (cons 'prompt prompt)))))))

(defun ob-chat-ai--messages (body params)
  "Return the messages for BODY and PARAMS.
They are the system message, the conversation so far of the block's
:session, and the turns of BODY, its $variables replaced."
  (let* ((session (ob-chat-ai-messages-session params))
         (history (and session
                       (ob-chat-ai-messages-history
                        session (ob-chat-ai--block-start) #'ob-chat-ai--block-busy-p
                        ob-chat-ai--previewing)))
         (system (or (cdr history) (ob-chat-ai--param params :system)))
         (role (format "%s" (or (ob-chat-ai--param params :role-system) "system")))
         (turns (append (car history) (ob-chat-ai-messages-block-turns body params))))
    (vconcat
     (and system `(((role . ,role) (content . ,(format "%s" system)))))
     (ob-chat-ai-files-messages
      (mapcar (lambda (turn)
                (if (eq (car turn) :message)
                    (cdr turn)
                  `((role . ,(car turn)) (content . ,(cdr turn)))))
              turns)
      params))))

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

(defun ob-chat-ai--api-key (params url)
  "Return the request fields that carry the key of PARAMS going to URL.
A key that the document gives (:api-key, the key itself or <<NAME>>,
a block whose body is the key) goes where the document sends it.
Otherwise auth-source is asked for the host of URL, and its key
carries that host, so that the helper sends it there and nowhere
else.  With neither, the request says where Emacs looked: keys from
the environment are the helper's, which sends them only to their
provider's own address."
  (let ((given (ob-chat-ai--param params :api-key)))
    (if given
        `((api_key . ,(ob-chat-ai--one-line-key (ob-chat-ai--document-key given))))
      (let* ((host (and url (url-host (url-generic-parse-url url))))
             (host (and (org-string-nw-p host) host))
             (key (ob-chat-ai--auth-source-key host)))
        (if key
            `((api_key . ,(ob-chat-ai--one-line-key key)) (api_key_host . ,host))
          `((looked_in . [":api-key" ,(ob-chat-ai--auth-source-place host)])))))))

(defun ob-chat-ai--auth-source-place (host)
  "Return, in words, the place in auth-source for a key for HOST."
  (let ((files (seq-filter #'stringp auth-sources)))
    (format "auth-source (machine %s%s)" (or host "of the base URL")
            (if files (concat " in " (mapconcat #'identity files ", ")) ""))))

(defun ob-chat-ai--document-key (given)
  "Return the key that :api-key GIVEN names: itself, or the body of <<NAME>>."
  (if (and (stringp given)
           (string-match "\\`<<\\([^<>()]+\\)\\(()\\)?>>\\'" given))
      (let ((name (match-string 1 given)))
        (or (ob-chat-ai--nonempty (ob-chat-ai--named-block-body name :api-key))
            (ob-chat-ai--user-error ":api-key refers to block %s, which is empty"
                                    name)))
    (format "%s" given)))

(defun ob-chat-ai--one-line-key (key)
  "Return KEY, refusing it when it has a line break in it."
  (when (string-match-p "[\n\r]" key)
    (ob-chat-ai--user-error "The API key has a line break in it"))
  key)

(defun ob-chat-ai--auth-source-key (host)
  "Return the secret that auth-source has for HOST, or nil."
  (when host
    (let* ((found (car (auth-source-search :host host :max 1 :require '(:secret))))
           (secret (plist-get found :secret)))
      (ob-chat-ai--nonempty (if (functionp secret) (funcall secret) secret)))))

(defun ob-chat-ai--nonempty (text)
  "Return TEXT trimmed, or nil when it is nil or blank."
  (and text (not (string-empty-p (string-trim text))) (string-trim text)))

;;;; Sessions

(defvar ob-chat-ai--waiting nil
  "Markers at the blocks that wait for an earlier block of their session.
The newest is first.")

(defun ob-chat-ai--block-start ()
  "Return the start of the block at point, or else of the block being run.
Babel runs a block with point on it, except for a #+CALL: line; where
it says the block is may be out of date when a reply came meanwhile."
  (let ((element (ob-chat-ai--element-at-point)))
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
it is then run again when that reply is in.  A request of its own
still running is dropped, as when it is sent again at once."
  (let* ((session (ob-chat-ai-messages-session params))
         (here (ob-chat-ai--block-start)))
    (when (and session
               (seq-some #'ob-chat-ai--block-busy-p
                         (ob-chat-ai-messages-session-blocks session here)))
      (let ((marker (copy-marker here t))
            (placeholder (ob-chat-ai--session-placeholder session)))
        (ob-chat-ai--drop-block-job t)
        (setq ob-chat-ai--waiting
              (cons marker
                    (seq-remove (lambda (other)
                                  (when (and (eq (marker-buffer other) (current-buffer))
                                             (= other here))
                                    (ob-chat-ai--stop-waiting other)
                                    t))
                                ob-chat-ai--waiting)))
        (ob-chat-ai--take-back-result
         #'ignore
         (lambda ()
           (ob-chat-ai--show-waiting marker placeholder)
           (message "%s" placeholder)))
        placeholder))))

(defun ob-chat-ai--show-waiting (marker placeholder)
  "Show PLACEHOLDER under the block at MARKER, which waits for its session.
It is an overlay's text, as a streaming reply's is: the buffer is left
as it was, so that no placeholder is saved, read or undone."
  (when (buffer-live-p (marker-buffer marker))
    (with-current-buffer (marker-buffer marker)
      (save-excursion
        (save-restriction
          (widen)
          (goto-char marker)
          (goto-char (org-element-property :end (org-element-at-point)))
          (skip-chars-backward " \t\n")
          (let ((overlay (make-overlay marker (line-end-position) nil t nil)))
            (overlay-put overlay 'ob-chat-ai-waiting t)
            (overlay-put overlay 'after-string
                         (propertize (concat "\n: " placeholder) 'face 'shadow))))))))

(defun ob-chat-ai--stop-waiting (marker)
  "Stop showing that the block at MARKER waits, and forget MARKER."
  (let ((buffer (marker-buffer marker)))
    (when (buffer-live-p buffer)
      (with-current-buffer buffer
        (dolist (overlay (overlays-at marker))
          (when (overlay-get overlay 'ob-chat-ai-waiting)
            (delete-overlay overlay))))))
  (set-marker marker nil))

(defun ob-chat-ai--stop-waiting-blocks (which)
  "Stop the blocks waiting for their session that WHICH picks; count them.
WHICH is called with each one's marker, in its buffer.  They keep
the result they had."
  (let ((count 0))
    (dolist (marker ob-chat-ai--waiting)
      (when (and (buffer-live-p (marker-buffer marker))
                 (with-current-buffer (marker-buffer marker)
                   (funcall which marker)))
        (setq ob-chat-ai--waiting (delq marker ob-chat-ai--waiting))
        (ob-chat-ai--stop-waiting marker)
        (cl-incf count)))
    count))

(defun ob-chat-ai--session-placeholder (session)
  "Return the placeholder of a block that waits for the earlier ones of SESSION."
  (ob-chat-ai-reply-placeholder (format "the earlier blocks of session %s" session)))

(defun ob-chat-ai--start-waiting (job)
  "Run each waiting block whose session has no earlier block left to wait for.
A block that cannot run gets an error line saying why.  Only the end
of JOB of a :session can let one go on: after another, the waiting
blocks are not looked at."
  (when (ob-chat-ai-messages-session (ob-chat-ai--job-params job))
    (ob-chat-ai--start-waiting-blocks)))

(defun ob-chat-ai--start-waiting-blocks ()
  "Run each waiting block whose session has no earlier block left to wait for.
A block that cannot run gets an error line saying why."
  (dolist (marker (reverse ob-chat-ai--waiting))
    (let ((buffer (marker-buffer marker)))
      (if (not (buffer-live-p buffer))
          (setq ob-chat-ai--waiting (delq marker ob-chat-ai--waiting))
        (with-current-buffer buffer
          (save-excursion
            (goto-char marker)
            (let ((session (ob-chat-ai-messages-block-session marker)))
              (cond
               ((not session)
                (setq ob-chat-ai--waiting (delq marker ob-chat-ai--waiting))
                (ob-chat-ai--stop-waiting marker))
               ((not (seq-some #'ob-chat-ai--block-busy-p
                               (ob-chat-ai-messages-session-blocks session marker)))
                (setq ob-chat-ai--waiting (delq marker ob-chat-ai--waiting))
                (ob-chat-ai--stop-waiting marker)
                (ob-chat-ai--run-waiting))))))))))

(defun ob-chat-ai--run-waiting ()
  "Run the block at point, which waited for its session; show why if it cannot.
Its earlier result stayed in place while it waited."
  (let ((org-confirm-babel-evaluate nil))
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

;;;; Usage

;;;###autoload
(defun ob-chat-ai-usage ()
  "Show what the chat-ai blocks of this Org file cost, per block and in total.
The helper reads its usage log (see README.org) and this shows its
totals as an Org table, in the buffer *chat-ai usage*."
  (interactive)
  (unless buffer-file-name
    (user-error "This buffer visits no file; the usage log knows blocks by their file"))
  (let* ((file (expand-file-name buffer-file-name))
         (final (ob-chat-ai-process-wait
                 (ob-chat-ai-process-send
                  `((type . "usage") (file . ,file) (timeout . 5)))))
         (buffer (get-buffer-create "*chat-ai usage*")))
    (unless (equal (alist-get 'type final) "usage")
      (ob-chat-ai--user-error "%s" (or (alist-get 'message final)
                                       "the helper could not read the usage log")))
    (with-current-buffer buffer
      (let ((inhibit-read-only t))
        (erase-buffer)
        (org-mode)
        (insert (ob-chat-ai--usage-table file (alist-get 'totals final)))
        (goto-char (point-min))
        (when (search-forward "|" nil t)
          (org-table-align))
        (goto-char (point-min))))
    (display-buffer buffer)
    buffer))

(defun ob-chat-ai--usage-money (cost unpriced)
  "Return COST in USD for the usage table, noting UNPRICED requests."
  (cond
   ((not (numberp cost)) "price unknown")
   ((and (numberp unpriced) (> unpriced 0))
    (format "$%.4f (+%d unpriced)" cost unpriced))
   (t (format "$%.4f" cost))))

(defun ob-chat-ai--usage-table (file rows)
  "Return the usage ROWS of FILE as a heading and an Org table with a total line."
  (if (null rows)
      (format "* chat-ai usage of %s\n\nNo requests from this file are in the log.\n"
              (abbreviate-file-name file))
    (let ((sums (make-vector 5 0))
          (cost nil)
          (unpriced 0)
          (fields '(requests prompt_tokens completion_tokens reasoning_tokens
                             total_tokens)))
      (concat
       (format "* chat-ai usage of %s\n\n" (abbreviate-file-name file))
       "| block | model | requests | prompt | completion | reasoning | total | cost |\n|-\n"
       (mapconcat
        (lambda (row)
          (let ((index 0))
            (dolist (field fields)
              (cl-incf (aref sums index) (or (alist-get field row) 0))
              (cl-incf index)))
          (when (numberp (alist-get 'cost row))
            (setq cost (+ (or cost 0) (alist-get 'cost row))))
          (cl-incf unpriced (or (alist-get 'unpriced row) 0))
          (format "| %s | %s | %s | %s |\n"
                  (or (alist-get 'block row) "-")
                  (or (alist-get 'model row) "?")
                  (mapconcat (lambda (field) (format "%s" (or (alist-get field row) 0)))
                             fields " | ")
                  (ob-chat-ai--usage-money (alist-get 'cost row)
                                           (alist-get 'unpriced row))))
        rows "")
       "|-\n"
       (format "| total | | %s | %s |\n"
               (mapconcat #'number-to-string sums " | ")
               (ob-chat-ai--usage-money cost unpriced))))))

(provide 'ob-chat-ai)

;;; ob-chat-ai.el ends here
